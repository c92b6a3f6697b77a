"""Decode steps of Llama-family models in a few large ops, with transformers' own weights and arithmetic."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from palaver.engine.torch.quantized import GGUFLinear, join_layers


class LlamaDecoder:
    """Run one decode step (one new token per row) of a Llama model without its eager forward's machinery.

    transformers' forward spends about as long as the weights' own kernel in module calls, mask building and
    small ops. This runs the same operations in the same order (RMSNorm, rotary, grouped-query SDPA with a
    padding mask, SiLU MLP) straight on the model's modules and cache, so a row's logits are those of the
    eager forward and do not depend on which rows share the batch. Prefill still goes through transformers.
    """

    # transformers' modules and configs are reached by attribute, which torch's typing cannot follow: Any.
    def __init__(self, model: Any):
        inner = model.model
        config = model.config
        self.embed, self.rotary, self.norm, self.head = inner.embed_tokens, inner.rotary_emb, inner.norm, model.lm_head
        self.layers: list[Any] = list(inner.layers[: config.num_hidden_layers])
        attention = self.layers[0].self_attn
        self.head_dim, self.scaling = attention.head_dim, attention.scaling
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.qkv = [
            _join([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]) for layer in self.layers
        ]
        self.gate_up = [_join([layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in self.layers]

    @staticmethod
    def supports(model: Any) -> bool:
        """Tell whether this model is a plain Llama that the decoder reproduces exactly."""
        config = model.config
        return bool(
            type(model).__name__ == "LlamaForCausalLM"
            and config._attn_implementation == "sdpa"
            and config.hidden_act == "silu"
            and not config.attention_bias
            and not config.mlp_bias
            and config.pretraining_tp == 1
        )

    @torch.inference_mode()
    def step(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """Return next-token logits [rows, vocabulary] for one token per row; mask covers the cache and it."""
        rows = input_ids.shape[0]
        hidden = self.embed(input_ids)
        cos, sin = self.rotary(hidden, positions)
        # rotate_half(x) * sin == swap_halves(x) * signed_sin, with the sign moved (exactly) onto sin.
        half = self.head_dim // 2
        cos, signed_sin = cos.unsqueeze(1), torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(1)
        # One query per row: its heads become the query axis of their key/value group (transformers' pack_gqa).
        allowed = mask.bool()[:, None, None, :]
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            states = _rms_norm(hidden, layer.input_layernorm)
            query_key, value = _project(states, self.qkv[index], [q_width + kv_width, kv_width])
            # Queries and keys take the same rotation: rotate them together, one head per row of a view.
            query_key = query_key.view(rows, self.heads + self.kv_heads, 1, self.head_dim)
            query_key = query_key * cos + _swap_halves(query_key) * signed_sin
            query, key = query_key.split([self.heads, self.kv_heads], dim=1)
            value = value.view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            keys, values = cache.update(key, value, index)
            if self.heads != self.kv_heads:
                query = query.reshape(rows, self.kv_heads, self.heads // self.kv_heads, self.head_dim)
            attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=allowed, scale=self.scaling)
            attended = attended.reshape(rows, -1, 1, self.head_dim).transpose(1, 2).reshape(rows, 1, q_width)
            hidden = hidden + attention.o_proj(attended)
            states = _rms_norm(hidden, layer.post_attention_layernorm)
            gate, up = _project(states, self.gate_up[index], [layer.mlp.gate_proj.out_features] * 2)
            hidden = hidden + layer.mlp.down_proj(F.silu(gate) * up)
        return self.head(_rms_norm(hidden, self.norm))[:, -1]


def _join(projections: list[nn.Module]) -> GGUFLinear | list[nn.Module]:
    """Join projections of one input into one kernel call where they share a block type; else keep them apart."""
    return join_layers(projections) or projections


def _project(states: torch.Tensor, projection: GGUFLinear | list[nn.Module], widths: list[int]) -> list[torch.Tensor]:
    """Apply joined (or separate) projections and cut the result into parts of the given widths."""
    joined = (
        projection(states) if isinstance(projection, GGUFLinear) else torch.cat([p(states) for p in projection], -1)
    )
    return list(joined.split(widths, dim=-1))


def _rms_norm(hidden: torch.Tensor, norm: Any) -> torch.Tensor:
    # transformers' LlamaRMSNorm, op for op, so the result has the same bits.
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return norm.weight * (hidden * torch.rsqrt(variance + norm.variance_epsilon))


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)
