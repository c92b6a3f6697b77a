"""A KV cache layer that appends in place into spare room, instead of concatenating the whole cache each step."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

SPARE_TOKENS = 64  # room added beyond what is needed, besides a quarter more, whenever a layer is reallocated


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of larger buffers, so a decode step copies one position.

    The batch replaces keys and values wholesale when rows join or leave; the next update then moves them into
    fresh buffers with room to spare. Values are unchanged, so replies are too.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    @classmethod
    def adopt(cls, layer: DynamicLayer) -> GrowingLayer:
        """Take over another layer's keys and values."""
        grown = cls()
        if layer.is_initialized:
            grown.lazy_initialization(layer.keys, layer.values)
            grown.keys, grown.values = layer.keys, layer.values
        return grown

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys = self.keys
        if keys is None or keys.numel() == 0:
            self.keys, self.values = key_states[..., :0, :], value_states[..., :0, :]
        length, adding = self.keys.shape[-2], key_states.shape[-2]
        if not self._owns_views() or length + adding > self._key_buffer.shape[-2]:
            self._reallocate(length + adding)
        end = length + adding
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys, self.values = self._key_buffer[..., :end, :], self._value_buffer[..., :end, :]
        return self.keys, self.values

    def _owns_views(self) -> bool:
        """Tell whether keys and values are still the views this layer made of its buffers."""
        keys, values = self._key_buffer, self._value_buffer
        return (
            keys is not None
            and values is not None
            and self.keys.shape[:-2] == keys.shape[:-2]
            and self.keys.data_ptr() == keys.data_ptr()
            and self.values.data_ptr() == values.data_ptr()
        )

    def _reallocate(self, needed: int) -> None:
        capacity = needed + SPARE_TOKENS + needed // 4
        length = self.keys.shape[-2]
        for name in ("keys", "values"):
            current = getattr(self, name)
            buffer = current.new_empty((*current.shape[:-2], capacity, current.shape[-1]))
            buffer[..., :length, :] = current
            setattr(self, f"_{name[:-1]}_buffer", buffer)
        self.keys, self.values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]


def grow_in_place(cache) -> None:
    """Make every layer of a DynamicCache append in place."""
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[index] = GrowingLayer.adopt(layer)
