"""A KV cache layer that appends in place into spare room, instead of concatenating the whole cache each step."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

SPARE_TOKENS = 64  # room added beyond what is needed, besides a quarter more, whenever a layer is reallocated


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of larger buffers, so a decode step copies one position.

    The batch replaces keys and values wholesale when rows join or leave; the next update then moves them into
    fresh buffers with room to spare. Values are unchanged, so replies are too.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    @classmethod
    def adopt(cls, layer: DynamicLayer) -> GrowingLayer:
        """Take over another layer's keys and values."""
        grown = cls()
        if layer.is_initialized and layer.keys is not None and layer.values is not None:
            grown.lazy_initialization(layer.keys, layer.values)
            grown.keys, grown.values = layer.keys, layer.values
        return grown

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self.keys, self.values
        if keys is None or values is None or keys.numel() == 0:
            keys, values = key_states[..., :0, :], value_states[..., :0, :]
        length, end = keys.shape[-2], keys.shape[-2] + key_states.shape[-2]
        key_buffer, value_buffer = self._key_buffer, self._value_buffer
        if key_buffer is None or value_buffer is None or not self._owns(keys, values) or end > key_buffer.shape[-2]:
            key_buffer, value_buffer = self._reallocate(keys, values, end)
        key_buffer[..., length:end, :] = key_states
        value_buffer[..., length:end, :] = value_states
        self.keys, self.values = key_buffer[..., :end, :], value_buffer[..., :end, :]
        return self.keys, self.values

    def _owns(self, keys: torch.Tensor, values: torch.Tensor) -> bool:
        """Tell whether keys and values are still the views this layer made of its buffers."""
        key_buffer, value_buffer = self._key_buffer, self._value_buffer
        return (
            key_buffer is not None
            and value_buffer is not None
            and keys.shape[:-2] == key_buffer.shape[:-2]
            and keys.data_ptr() == key_buffer.data_ptr()
            and values.data_ptr() == value_buffer.data_ptr()
        )

    def _reallocate(self, keys: torch.Tensor, values: torch.Tensor, needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Move keys and values into fresh buffers with room for needed positions and more; return the buffers."""
        capacity = needed + SPARE_TOKENS + needed // 4
        length = keys.shape[-2]
        buffers = []
        for current in (keys, values):
            buffer = current.new_empty((*current.shape[:-2], capacity, current.shape[-1]))
            buffer[..., :length, :] = current
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers
        return self._key_buffer, self._value_buffer


def grow_in_place(cache) -> None:
    """Make every layer of a DynamicCache append in place."""
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[index] = GrowingLayer.adopt(layer)
