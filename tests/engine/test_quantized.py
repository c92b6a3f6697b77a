"""The GGUF block kernel: exact weights, batch-invariant products, and models that keep their blocks."""

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import quantize
from torch import nn

from commons import Settings
from palaver.engine.loading import load_model
from palaver.engine.quantized import (
    Q4_0,
    Q4_1,
    Q8_0,
    GGUFEmbedding,
    GGUFLinear,
    dequantise,
    kernel_available,
    quantise_linear_layers,
    quantise_q8_0,
)

TYPES = [Q4_0, Q4_1, Q8_0]


@pytest.fixture(scope="module", autouse=True)
def kernel():
    assert kernel_available(), "make builds the kernel (csrc/build.py); CI must run the quantised path"


def random_blocks(qtype: int, rows: int, columns: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    weights = np.random.default_rng(seed).standard_normal((rows, columns)).astype(np.float32)
    stored = quantize(weights, gguf.GGMLQuantizationType(qtype))
    return torch.from_numpy(stored), stored


@pytest.mark.parametrize("qtype", TYPES)
def test_weights_are_exactly_gguf_pys_dequantised_weights(qtype):
    blocks, stored = random_blocks(qtype, 37, 96)
    expected = torch.from_numpy(gguf.dequantize(stored, gguf.GGMLQuantizationType(qtype)))
    assert torch.equal(torch.ops.palaver.gguf_dequantise(blocks, qtype, 96), expected)
    assert torch.equal(dequantise(blocks, qtype, 96), expected)


@pytest.mark.parametrize("qtype", TYPES)
def test_a_rows_product_is_the_same_bits_alone_and_in_any_batch(qtype):
    blocks, _ = random_blocks(qtype, 70, 160)
    x = torch.randn(41, 160, generator=torch.Generator().manual_seed(1))
    alone = torch.cat([torch.ops.palaver.gguf_linear(x[i : i + 1], blocks, qtype, 160) for i in range(len(x))])
    for size in (2, 3, 4, 7, 16, 32, 41):
        together = torch.cat(
            [torch.ops.palaver.gguf_linear(x[i : i + size], blocks, qtype, 160) for i in range(0, len(x), size)]
        )
        assert torch.equal(together, alone), f"batches of {size} changed the bits"
    reference = x @ dequantise(blocks, qtype, 160).T
    torch.testing.assert_close(alone, reference, rtol=1e-5, atol=1e-5)


def test_the_linear_layer_keeps_leading_dimensions_and_adds_its_bias():
    blocks, _ = random_blocks(Q4_1, 8, 64)
    bias = torch.arange(8, dtype=torch.float32)
    layer = GGUFLinear(blocks, Q4_1, 64, bias)
    x = torch.randn(2, 3, 64)
    torch.testing.assert_close(layer(x), x @ dequantise(blocks, Q4_1, 64).T + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not hold rows of 65"):
        GGUFLinear(blocks, Q4_1, 65)


def test_embedding_rows_are_dequantised_on_lookup():
    blocks, _ = random_blocks(Q8_0, 50, 64)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    assert torch.equal(GGUFEmbedding(blocks, Q8_0, 64)(ids), dequantise(blocks, Q8_0, 64)[ids])


def test_q8_0_quantisation_matches_ggml_byte_for_byte():
    weights = torch.randn(12, 128, generator=torch.Generator().manual_seed(2))
    weights[3, :32] = 0  # an all-zero block has scale 0
    expected = quantize(weights.numpy(), gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(quantise_q8_0(weights).numpy(), expected)


def float_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Embedding))]


def test_a_safetensors_model_opts_in_to_q8_0(chat_model, dialogpt_model, tmp_path):
    for path in (chat_model, dialogpt_model):
        family = load_model(Settings(model=str(path), cache_dir=str(tmp_path), weights="q8_0")).family
        layers = [m for m in family.model.modules() if isinstance(m, GGUFLinear)]
        assert layers and all(layer.qtype == Q8_0 for layer in layers)
    default = load_model(Settings(model=str(chat_model), cache_dir=str(tmp_path))).family.model
    assert not [m for m in default.modules() if isinstance(m, GGUFLinear)], "off by default"


def test_quantising_skips_layers_whose_inputs_do_not_split_into_blocks():
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 5))
    assert quantise_linear_layers(model) == 1
    assert isinstance(model[0], GGUFLinear) and isinstance(model[1], nn.Linear)
