"""The lean Llama decode step: transformers' logits, bit for bit, in fewer ops; weights held once."""

import copy
import threading

import pytest
import tiny_models
import torch

from commons import Message, Settings
from palaver.engine.torch.loading import load_model
from palaver.engine.torch.quantized import GGUFLinear

# float32 Linear layers; Q8_0 made at load (joined by a copy); GGUF blocks of mixed types (kept apart);
# GGUF blocks of one type per projection group (laid out together while loading).
VARIANTS = [
    ("chat_model", "auto"),
    ("chat_model", "q8_0"),
    ("gguf_chat_model", "auto"),
    ("uniform_gguf_chat_model", "auto"),
]
UNIFORM_TYPES = {
    **tiny_models.GGUF_TYPES,
    "attn_q": "Q4_1",
    "attn_k": "Q4_1",
    "attn_v": "Q4_1",
    "ffn_gate": "Q8_0",
    "ffn_up": "Q8_0",
}


@pytest.fixture(scope="module")
def uniform_gguf_chat_model(chat_model, tmp_path_factory):
    """The tiny chat Llama as a GGUF whose Q/K/V share one block type, and gate/up another."""
    return tiny_models.build_gguf_llama(chat_model, tmp_path_factory.mktemp("uniform") / "llama.gguf", UNIFORM_TYPES)


def prefilled_batch(family):
    """A batch of three rows with prompts of different lengths, so the cache holds padding."""
    batch = family.start_batch()
    params = Settings(temperature=0.0, max_new_tokens=8).generation_defaults()
    for turns in (1, 3, 5):
        messages = [Message("user" if i % 2 == 0 else "assistant", f"turn {i} about the sea") for i in range(turns)]
        batch.add(family.new_row(family.build_prompt(messages, 8), params, threading.Event()))
    return batch


@pytest.mark.parametrize("fixture, weights", VARIANTS)
def test_a_decode_step_gives_transformers_logits_and_cache_bit_for_bit(request, fixture, weights):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)), weights=weights)).family
    assert family.model.decoder is not None
    batch = prefilled_batch(family)
    for _ in range(3):
        input_ids = torch.tensor([[row.generated[-1]] for row in batch.rows])
        positions = torch.tensor([[len(row.prompt_ids) + len(row.generated) - 1] for row in batch.rows])
        mask = torch.cat([batch.mask, torch.ones(len(batch.rows), 1, dtype=batch.mask.dtype)], dim=1)
        assert not bool(mask.all()), "the rows must be padded for transformers to take its masked path"
        reference_cache = copy.deepcopy(batch.cache)
        expected = family.model.module(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=reference_cache,
            use_cache=True,
        ).logits[:, -1]
        logits = family.model.decoder.step(input_ids, positions, mask, batch.cache)
        assert torch.equal(logits, expected)
        for layer, reference in zip(batch.cache.layers, reference_cache.layers):
            assert torch.equal(layer.keys, reference.keys) and torch.equal(layer.values, reference.values)
        batch.mask = mask
        for index, row in enumerate(batch.rows):
            row.accept(logits[index].float().numpy())


@pytest.mark.parametrize("fixture, weights", [("chat_model", "q8_0"), ("uniform_gguf_chat_model", "auto")])
def test_projections_of_one_block_type_are_joined_and_the_weights_held_once(request, fixture, weights):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)), weights=weights)).family
    for index, layer in enumerate(family.model.module.model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        for joined, parts in [
            (family.model.decoder.qkv[index], [attention.q_proj, attention.k_proj, attention.v_proj]),
            (family.model.decoder.gate_up[index], [mlp.gate_proj, mlp.up_proj]),
        ]:
            assert isinstance(joined, GGUFLinear)
            assert joined.out_features == sum(part.out_features for part in parts)
            # Each part reads its rows of the joined blocks: one copy of the weights.
            start = joined.blocks.data_ptr()
            for part in parts:
                assert part.blocks.data_ptr() == start
                start += part.blocks.numel()
            assert start == joined.blocks.data_ptr() + joined.blocks.numel()


@pytest.mark.parametrize("fixture", ["dialogpt_model", "blenderbot_model"])
def test_other_architectures_keep_transformers_forward(request, fixture):
    family = load_model(Settings(model=str(request.getfixturevalue(fixture)))).family
    assert family.model.decoder is None
