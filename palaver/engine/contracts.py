"""What the worker and the model families may ask of a served model and of its batch, on either path."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.decoding.rows import Row


@runtime_checkable
class Batch(Protocol):
    """Rows generating together: they join at any step and leave as soon as they end."""

    @property
    def rows(self) -> list[Row]:
        """Return the rows in the batch, generating or waiting to start."""
        ...

    @property
    def finished_early(self) -> list[Row]:
        """Return the rows that ended on joining (their first token stopped them), not yet removed."""
        ...

    def add(self, row: Row) -> None:
        """Add one row."""
        ...

    def add_many(self, rows: list[Row]) -> None:
        """Add rows that arrived together."""
        ...

    def step(self) -> None:
        """Compute one step: the next token of every generating row."""
        ...

    def remove_done(self) -> list[Row]:
        """Take the finished rows out and return them."""
        ...

    def embed(self, texts: list[list[int]]) -> np.ndarray | None:
        """Return [texts, embedding_size]: each text's final hidden states mean-pooled; None while memory is short.

        It runs beside the rows, between their steps, in the memory they share; None asks again after a step.
        """
        ...

    def release(self) -> None:
        """Let go of what every row holds: the batch is being replaced or the worker is ending."""
        ...


@runtime_checkable
class ServedModel(Protocol):
    """A loaded model as the families see it: the facts they read from it, and the batches it runs."""

    model_type: str  # the architecture, as transformers' config names it ("llama", "gpt2", "blenderbot-small")
    is_encoder_decoder: bool
    embeds_only: bool  # a sentence encoder: its batches embed, and no row ever joins them
    context_length: int  # the most positions the model attends to
    vocab_size: int  # the rows of its output; 0 where the model does not say
    embedding_size: int  # the width of its final hidden states, which an embedding pools
    end_of_turn_ids: tuple[int, ...]  # the ids the model's own config says end a reply, beside the tokenizer's EOS
    pad_id: int | None  # the model's own padding id, where it has one

    def new_batch(self, prefix_cache: PrefixCache | None) -> Batch:
        """Start an empty batch on this model, reusing cached prompt prefixes where prefix_cache is given."""
        ...

    def kv_bytes(self) -> tuple[int, int]:
        """Return the KV cache's budget and the bytes of it in use; (0, 0) where the model keeps no such budget."""
        ...

    def close(self) -> None:
        """Let go of what the model holds outside Python's reach; it cannot step after this."""
        ...
