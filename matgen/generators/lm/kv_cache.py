"""A key/value cache for ``generate`` that writes each step in place.

transformers' ``DynamicCache`` appends a step's keys and values with ``torch.cat``, copying the
whole cache of every layer at every step: O(length^2) memory traffic per row, which on a CPU
costs as much as the attention itself for a batch of short texts. :class:`GrowingCache` keeps
each layer's states in a buffer with spare room along the sequence (doubling when full) and
hands attention views of the filled part, so a step writes only its new states.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

__all__ = ["GrowingCache"]


class _GrowingLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose ``keys`` / ``values`` are views of larger buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._length = 0

    def _views(self) -> None:
        assert self._key_buffer is not None and self._value_buffer is not None
        self.keys = self._key_buffer[..., : self._length, :]
        self.values = self._value_buffer[..., : self._length, :]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        buffer = self._key_buffer
        if buffer is None or self._length + new > buffer.shape[-2]:
            capacity = max(64, 2 * (self._length + new))
            keys = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
            values = value_states.new_empty(
                (*value_states.shape[:-2], capacity, value_states.shape[-1])
            )
            if buffer is not None and self._length:
                keys[..., : self._length, :] = self.keys
                values[..., : self._length, :] = self.values
            self._key_buffer, self._value_buffer = keys, values
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., self._length : self._length + new, :] = key_states
        self._value_buffer[..., self._length : self._length + new, :] = value_states
        self._length += new
        self._views()
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized or self._key_buffer is None:
            return
        self._length = max(0, self._length + tokens_to_remove)
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized and self._key_buffer is not None:
            self._key_buffer = self._key_buffer.repeat_interleave(repeats, dim=0)
            self._value_buffer = self._value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._key_buffer is not None:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self._views()

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self._length = 0
        super().reset()


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` of :class:`_GrowingLayer` s, one per decoder layer, made lazily."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=_GrowingLayer)
