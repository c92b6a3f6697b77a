"""The prefix cache: finished requests' KV caches, kept so a conversation's next turn computes only new tokens."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any


class PrefixCache:
    """Keep finished requests' KV caches (whatever form a batch keeps them in) under a budget of tokens."""

    MIN_REUSE = 8  # shorter shared prefixes are not worth a separate prefill

    def __init__(self, max_tokens: int, counts: Counter | None = None, release: Callable[[Any], None] | None = None):
        self.max_tokens = max_tokens
        self.counts = Counter() if counts is None else counts  # prompt tokens computed, and reused
        self.release = release or (lambda cache: None)  # frees an entry's cache when it is evicted
        self.entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.tokens = 0

    def store(self, token_ids: list[int], cache: Any) -> bool:
        """Remember the cache of token_ids, evicting the least recently used beyond the budget; False if not kept."""
        key = tuple(token_ids)
        if len(key) < self.MIN_REUSE or len(key) > self.max_tokens or key in self.entries:
            return False
        while self.tokens + len(key) > self.max_tokens:
            self.evict_oldest()
        self.entries[key] = cache
        self.tokens += len(key)
        return True

    def evict_oldest(self) -> bool:
        """Forget the least recently used entry; False when there is none."""
        if not self.entries:
            return False
        key, cache = self.entries.popitem(last=False)
        self.tokens -= len(key)
        self.release(cache)
        return True

    def take(self, key: tuple[int, ...]) -> Any:
        """Remove an entry and hand its cache to the caller, who now owns it."""
        self.tokens -= len(key)
        return self.entries.pop(key)

    def lookup(self, prompt_ids: list[int]) -> tuple[int, tuple[int, ...] | None]:
        """Return the length of the longest cached prefix of prompt_ids (leaving one token to compute) and its key."""
        best, best_key = 0, None
        known = prompt_ids[:-1]  # the last token is always computed
        for key in self.entries:
            shared = shared_prefix(key, known)
            if shared > best:
                best, best_key = shared, key
        if best_key is None or best < self.MIN_REUSE:
            return 0, None
        self.entries.move_to_end(best_key)
        return best, best_key

    def clear(self) -> None:
        """Forget every entry."""
        while self.evict_oldest():
            pass


def shared_prefix(tokens: Sequence[int], other: Sequence[int]) -> int:
    """Return how many tokens the two sequences share from their start."""
    shared = 0
    for a, b in zip(tokens, other):
        if a != b:
            break
        shared += 1
    return shared
