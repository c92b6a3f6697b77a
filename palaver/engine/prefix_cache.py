"""The prefix cache: finished requests' KV caches, kept so a conversation's next turn computes only new tokens."""

from __future__ import annotations

from collections import Counter, OrderedDict

import torch


class PrefixCache:
    """Keep finished requests' KV caches, so a conversation's next turn computes only its new tokens."""

    MIN_REUSE = 8  # shorter shared prefixes are not worth a separate prefill

    def __init__(self, max_tokens: int, counts: Counter | None = None):
        self.max_tokens = max_tokens
        self.counts = Counter() if counts is None else counts  # prompt tokens computed, and reused
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.tokens = 0

    def store(self, token_ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Remember the cache of token_ids, evicting the least recently used beyond the token budget."""
        key = tuple(token_ids)
        if len(key) < self.MIN_REUSE or len(key) > self.max_tokens or key in self.entries:
            return
        while self.tokens + len(key) > self.max_tokens:
            evicted, _ = self.entries.popitem(last=False)
            self.tokens -= len(evicted)
        self.entries[key] = layers
        self.tokens += len(key)

    def lookup(self, prompt_ids: list[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Return the longest cached prefix of prompt_ids (leaving one token to compute) and its cache."""
        best, best_key = 0, None
        for key in self.entries:
            shared = 0
            for a, b in zip(key, prompt_ids[:-1]):
                if a != b:
                    break
                shared += 1
            if shared > best:
                best, best_key = shared, key
        if best_key is None or best < self.MIN_REUSE:
            return 0, None
        self.entries.move_to_end(best_key)
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in self.entries[best_key]]
