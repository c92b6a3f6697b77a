"""The in-place KV cache layer: the same keys and values as concatenation, without copying the cache each step."""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from palaver.engine.torch.kv_cache import GrowingLayer, grow_in_place


def states(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 2, length, 4, generator=torch.Generator().manual_seed(seed))


def test_appending_equals_concatenating_and_reallocates_rarely():
    grown, plain = GrowingLayer(), DynamicLayer()
    buffers = set()
    for step in range(100):
        new_keys, new_values = states(3, 7 if step == 0 else 1, step), states(3, 7 if step == 0 else 1, 1000 + step)
        keys, values = grown.update(new_keys, new_values)
        expected_keys, expected_values = plain.update(new_keys, new_values)
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
        buffers.add(keys.data_ptr())
    assert len(buffers) <= 2, "100 steps fit in two buffers, where concatenating makes 100"


def test_keys_replaced_by_the_batch_are_taken_over():
    layer = GrowingLayer()
    layer.update(states(3, 5, 0), states(3, 5, 1))
    kept = torch.tensor([0, 2])
    selected_keys, selected_values = layer.keys[kept], layer.values[kept]  # two rows leave the batch
    layer.keys, layer.values = selected_keys, selected_values
    keys, values = layer.update(states(2, 1, 2), states(2, 1, 3))
    assert torch.equal(keys, torch.cat([selected_keys, states(2, 1, 2)], dim=-2))
    assert torch.equal(values, torch.cat([selected_values, states(2, 1, 3)], dim=-2))


def test_a_dynamic_cache_is_switched_over_with_its_contents():
    cache = DynamicCache()
    cache.update(states(1, 4, 0), states(1, 4, 1), 0)
    grow_in_place(cache)
    assert isinstance(cache.layers[0], GrowingLayer)
    keys, _ = cache.update(states(1, 1, 2), states(1, 1, 3), 0)
    assert torch.equal(keys, torch.cat([states(1, 4, 0), states(1, 1, 2)], dim=-2))
    assert cache.get_seq_length() == 5
