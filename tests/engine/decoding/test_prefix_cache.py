"""The prefix cache: the longest cached prefix is found, one token is always left to compute, the budget holds."""

import torch

from palaver.engine.decoding.prefix_cache import PrefixCache


def test_the_prefix_cache_finds_the_longest_prefix_and_stays_within_its_budget():
    def layers(n):
        return [(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2))]

    cache = PrefixCache(max_tokens=30)
    cache.store(list(range(10)), layers(10))
    cache.store(list(range(12)), layers(12))
    assert cache.lookup(list(range(20)))[0] == 12
    assert cache.lookup(list(range(12)))[0] == 11, "at least one token is left to compute"
    assert cache.lookup([99] + list(range(20)))[0] == 0
    assert cache.lookup(list(range(5)))[0] == 0, "prefixes shorter than MIN_REUSE are not reused"
    cache.store(list(range(100, 115)), layers(15))  # evicts the least recently used entry
    assert cache.tokens <= 30 and tuple(range(10)) not in cache.entries
    assert cache.lookup(list(range(20)))[1] == tuple(range(12))
