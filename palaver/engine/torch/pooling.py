"""Embeddings on the torch path: each text's final hidden states through transformers' own model, mean-pooled."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


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
