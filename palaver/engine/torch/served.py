"""A transformers model served through torch: the facts its config gives the families, and its batches."""

from __future__ import annotations

import functools
from typing import Any

from palaver.engine.contracts import Batch
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.torch.batching import CausalBatch, Seq2SeqBatch
from palaver.engine.torch.lean_decoder import LlamaDecoder

DEFAULT_CONTEXT = 1024  # for a config that names no context length


class TorchServedModel:
    """A transformers model on the torch path, read once for what the families and the worker ask of a model."""

    # transformers' models and configs are reached by attribute, which its typing does not follow: Any.
    def __init__(self, module: Any):
        self.module = module  # the transformers model itself, for the batches and for tests that reach into it
        config, generation = module.config, module.generation_config
        self.model_type: str = config.model_type
        self.is_encoder_decoder = bool(config.is_encoder_decoder)
        self.context_length = context_length(config)
        self.vocab_size = int(getattr(config, "vocab_size", 0) or 0)
        self.embedding_size = int(config.hidden_size)  # Blenderbot's d_model, GPT-2's n_embd, as transformers maps them
        self.end_of_turn_ids = ids_of(generation.eos_token_id)
        self.pad_id: int | None = next(iter(ids_of(generation.pad_token_id)), None)
        self.decoder_start_id: int | None = None  # the token an encoder-decoder model's replies start from
        if self.is_encoder_decoder:
            start = generation.decoder_start_token_id
            self.decoder_start_id = int(config.decoder_start_token_id if start is None else start)

    @functools.cached_property
    def decoder(self) -> LlamaDecoder | None:
        """Return the lean Llama decode step for this model, or None where it does not apply."""
        return LlamaDecoder(self.module) if LlamaDecoder.supports(self.module) else None

    def new_batch(self, prefix_cache: PrefixCache | None) -> Batch:
        """Start a batch: one left-padded KV cache for a causal model, encoded rows for an encoder-decoder one."""
        if not self.is_encoder_decoder:
            return CausalBatch(self.module, prefix_cache, self.decoder)
        assert self.decoder_start_id is not None  # set for every encoder-decoder model
        # The decoder is causal and each row's logits are read at its own last token: padding after it changes
        # nothing, so the model's own padding id serves whatever the tokenizer's is.
        return Seq2SeqBatch(self.module, self.decoder_start_id, self.pad_id or 0)

    def kv_bytes(self) -> tuple[int, int]:
        """Return (0, 0): the torch path's caches grow with their batch, within no budget of their own."""
        return 0, 0

    def close(self) -> None:
        """Do nothing: torch frees the weights once nothing refers to the model."""


def context_length(config: Any) -> int:
    """Return the model's context length from its config."""
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attribute, None)
        if value:
            return int(value)
    return DEFAULT_CONTEXT


def ids_of(value: int | list[int] | None) -> tuple[int, ...]:
    """Return a config's token id field (one id, a list of them, or none) as a tuple."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)
