"""Prompt-lookup drafts: the tokens that followed the last time a conversation said what it has just said.

Speculative decoding without a second model. A row's draft is what followed the latest earlier occurrence of its
last few tokens; the step computes the row's next token and every drafted position at once, and the row then
chooses each token from its own logits, in order, keeping drafted tokens while they are what it chose. Each token
is chosen exactly as it would be without drafts (the same logits, the same sampler and random stream), so replies
are the same bytes with drafts or without, greedy or seeded: a draft only decides how many tokens one step yields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LONGEST_MATCH = 3  # the suffix looked up first, in tokens; shorter ones after it
SHORTEST_MATCH = 2  # a single repeated token predicts too little to be worth a step's extra positions
DRAFT_TOKENS = 6  # tokens drafted at most per step
# A row whose drafts are mostly refused stops drafting: extra positions cost a step more than they return.
TRIAL_TOKENS = 24
LEAST_ACCEPTED = 0.25


@dataclass
class Drafter:
    """A row's n-gram index of its tokens so far, and how its drafts have fared."""

    tokens: list[int] = field(default_factory=list)
    # Each n-gram's latest end position, and the one before it: the suffix itself is always the latest occurrence.
    latest: dict[tuple[int, ...], int] = field(default_factory=dict)
    previous: dict[tuple[int, ...], int] = field(default_factory=dict)
    drafted: int = 0
    accepted: int = 0

    def extend(self, tokens: list[int]) -> None:
        """Index tokens appended to the row (its prompt, then each token it chooses)."""
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens) - 1
            for n in range(SHORTEST_MATCH, LONGEST_MATCH + 1):
                if end + 1 >= n:
                    key = tuple(self.tokens[end + 1 - n : end + 1])
                    if key in self.latest:
                        self.previous[key] = self.latest[key]
                    self.latest[key] = end

    def draft(self, most: int) -> list[int]:
        """Return up to most tokens that followed the latest earlier occurrence of the row's longest known suffix."""
        if most <= 0 or not self.pays:
            return []
        for n in range(LONGEST_MATCH, SHORTEST_MATCH - 1, -1):
            if len(self.tokens) < n:
                continue
            end = self.previous.get(tuple(self.tokens[-n:]))
            if end is not None:
                return self.tokens[end + 1 : end + 1 + min(most, DRAFT_TOKENS)]
        return []

    def record(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted

    @property
    def pays(self) -> bool:
        """Whether drafting still pays for this row: until its trial is over, or while enough drafts are kept."""
        return self.drafted < TRIAL_TOKENS or self.accepted >= LEAST_ACCEPTED * self.drafted
