"""A transformers model served through torch: the facts its config gives the families, and its batches."""

from __future__ import annotations

import functools
from typing import Any

from palaver.engine.contracts import Batch
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.prompting.encoders import SentenceLayout
from palaver.engine.torch.batching import CausalBatch, Seq2SeqBatch
from palaver.engine.torch.lean_decoder import LlamaDecoder
from palaver.engine.torch.pooling import SentenceBatch

DEFAULT_CONTEXT = 1024  # for a config that names no context length


class TorchServedModel:
    """A transformers model on the torch path, read once for what the families and the worker ask of a model."""

    # transformers' models and configs are reached by attribute, which its typing does not follow: Any.
    def __init__(self, module: Any, sentence: SentenceLayout | None = None, token_types: bool = False):
        """Serve module; a sentence encoder's with its layout, and token type ids where its tokenizer makes them."""
        self.module = module  # the transformers model itself, for the batches and for tests that reach into it
        self.sentence, self.token_types = sentence, token_types
        config = module.config
        generation = getattr(module, "generation_config", None) or config  # an encoder has none: its config's ids
        self.model_type: str = config.model_type
        self.is_encoder_decoder = bool(config.is_encoder_decoder)
        self.embeds_only = sentence is not None
        self.context_length = context_length(config) if sentence is None else encoder_positions(module, sentence)
        self.vocab_size = int(getattr(config, "vocab_size", 0) or 0)
        # Blenderbot's d_model, GPT-2's n_embd, as transformers maps them; an encoder joins one vector per pooling
        self.embedding_size = int(config.hidden_size) * (len(sentence.pooling) if sentence else 1)
        self.end_of_turn_ids = ids_of(getattr(generation, "eos_token_id", None))
        self.pad_id: int | None = next(iter(ids_of(getattr(generation, "pad_token_id", None))), None)
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
        if self.sentence is not None:
            return SentenceBatch(self.module, self.sentence.pooling, self.token_types)
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


def encoder_positions(module: Any, sentence: SentenceLayout) -> int:
    """Return the tokens an encoder reads: its positions, less those its table keeps for padding, within its bound.

    RoBERTa's and MPNet's positions start after the padding id (514 in the table, 512 for text); BERT's at 0.
    """
    table = getattr(getattr(module, "embeddings", None), "position_embeddings", None)  # none: rotary (NomicBert)
    padding = getattr(table, "padding_idx", None)
    positions = context_length(module.config) - (padding + 1 if padding is not None else 0)
    return min(positions, sentence.max_seq_length or positions)


def ids_of(value: int | list[int] | None) -> tuple[int, ...]:
    """Return a config's token id field (one id, a list of them, or none) as a tuple."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)
