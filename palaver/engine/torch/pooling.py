"""Embeddings on the torch path: each text's final hidden states through transformers' own model, mean-pooled, or
a sentence encoder's pooled as its files say."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from palaver.core.errors import GenerationFailed
from palaver.engine.decoding.rows import Row


@torch.inference_mode()
def mean_hidden_states(module: Any, texts: list[list[int]], encoder_decoder: bool) -> np.ndarray:
    """Return [texts, hidden]: each text's last hidden states, mean-pooled over its tokens.

    A causal model's are transformers' hidden_states[-1], which comes after the final norm (Llama's model.norm,
    GPT-2's ln_f); an encoder-decoder model's (Blenderbot's) are its encoder's last_hidden_state, since the decoder
    has read nothing. Each text runs alone, so no token is padding: its vector does not depend on its neighbours.
    """
    return np.stack([pooled(module, text, encoder_decoder) for text in texts])


def pooled(module: Any, text: list[int], encoder_decoder: bool) -> np.ndarray:
    """Return one text's last hidden states, averaged over its positions, in float32."""
    input_ids = torch.tensor([text])
    if encoder_decoder:
        states = module.get_encoder()(input_ids=input_ids).last_hidden_state
    else:  # one position's logits rather than the whole text's: only the hidden states are read
        output = module(input_ids=input_ids, output_hidden_states=True, use_cache=False, logits_to_keep=1)
        states = output.hidden_states[-1]
    return states[0].float().mean(dim=0).numpy()


class SentenceBatch:
    """A sentence encoder's batch: it embeds texts, and no row joins it (the engine refuses generations first)."""

    def __init__(self, module: Any, pooling: tuple[str, ...], token_types: bool):
        self.module, self.pooling, self.token_types = module, pooling, token_types
        self.rows: list[Row] = []
        self.finished_early: list[Row] = []

    def add(self, row: Row) -> None:
        """Refuse a row: a sentence encoder generates nothing."""
        raise GenerationFailed("this model only embeds: it generates no text")

    def add_many(self, rows: list[Row]) -> None:
        for row in rows:
            self.add(row)

    def step(self) -> None:
        """Do nothing: there are no rows to step."""

    def remove_done(self) -> list[Row]:
        return []

    def embed(self, texts: list[list[int]]) -> np.ndarray:
        """Return each text's vector, pooled as the model's files say; it keeps no memory budget to wait on."""
        return sentence_vectors(self.module, texts, self.pooling, self.token_types)

    def release(self) -> None:
        """Do nothing: the batch holds no rows and no cache."""


@torch.inference_mode()
def sentence_vectors(module: Any, texts: list[list[int]], pooling: tuple[str, ...], token_types: bool) -> np.ndarray:
    """Return [texts, hidden x modes]: each text's encoder states pooled as sentence-transformers pools them.

    Each text runs alone, unpadded (its attention mask all ones, its token types all 0, where the tokenizer makes
    them, as for one sentence): its vector does not depend on its neighbours. Several modes are joined in order.
    """
    vectors = []
    for text in texts:
        input_ids = torch.tensor([text])
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if token_types:
            inputs["token_type_ids"] = torch.zeros_like(input_ids)
        states = module(**inputs).last_hidden_state[0].float()
        vectors.append(torch.cat([POOLINGS[mode](states) for mode in pooling]).numpy())
    return np.stack(vectors)


def weighted_mean(states: torch.Tensor) -> torch.Tensor:
    """Return the states averaged with weights 1, 2, ... n by position, as sentence-transformers' weightedmean."""
    weights = torch.arange(1, len(states) + 1, dtype=states.dtype).unsqueeze(1)
    return (states * weights).sum(dim=0) / weights.sum()


# sentence-transformers' formulas (models/Pooling.py) over one unpadded text's [tokens, hidden] states.
POOLINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cls_token": lambda states: states[0],
    "max_tokens": lambda states: states.max(dim=0).values,
    "mean_tokens": lambda states: states.sum(dim=0) / len(states),
    "mean_sqrt_len_tokens": lambda states: states.sum(dim=0) / math.sqrt(len(states)),
    "weightedmean_tokens": weighted_mean,
    "lasttoken": lambda states: states[-1],
}
