"""The GGUF block kernel: exact weights, batch-invariant products, and models that keep their blocks."""

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import quantize
from torch import nn

from commons import Settings
from palaver.engine.gguf.file import KERNEL_TYPES, TYPE_LAYOUT
from palaver.engine.torch.loading import load_model
from palaver.engine.torch.quantized import (
    Q8_0,
    GGUFEmbedding,
    GGUFLinear,
    kernel_available,
    quantise_linear_layers,
    quantise_q8_0,
)

T = gguf.GGMLQuantizationType
TYPES = sorted(KERNEL_TYPES - {T.F32})
Q4_1 = T.Q4_1
# Where each type keeps its float16 scales in a block: these are set to finite values, every other byte is random.
SCALES = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q4_K: [0, 2], T.Q5_K: [0, 2]}
SCALES |= {T.Q6_K: [208], T.Q2_K: [80, 82], T.Q3_K: [108]}
EXTREME_HALVES = np.array([65504, -65504, 6.1e-5, 5.96e-8, -5.96e-8, 0.0, -0.0, 1e-3, 3.0], dtype=np.float16)


@pytest.fixture(scope="module", autouse=True)
def kernel():
    assert kernel_available(), "make builds the kernel (csrc/build.py); CI must run the quantised path"


def random_blocks(qtype: int, rows: int, columns: int, seed: int = 0, extreme: bool = False):
    """Return valid stored rows of a type: random bytes, with finite float16 scales (the extremes, if asked)."""
    rng = np.random.default_rng(seed)
    per_block, block_bytes = TYPE_LAYOUT[qtype]
    units = rows * columns // per_block
    if qtype in (T.F16, T.BF16):
        floats = rng.standard_normal(rows * columns).astype(np.float32)
        if extreme:
            floats[::7] = rng.choice(EXTREME_HALVES, floats[::7].size)
        halves = floats.astype(np.float16).view(np.uint16) if qtype == T.F16 else floats.view(np.uint32) >> 16
        raw = halves.astype(np.uint16).view(np.uint8)
    else:
        raw = rng.integers(0, 256, (units, block_bytes), dtype=np.uint8)
        for offset in SCALES[qtype]:
            scales = rng.choice(EXTREME_HALVES, units) if extreme else rng.standard_normal(units).astype(np.float16)
            raw[:, offset : offset + 2] = scales.astype(np.float16).view(np.uint8).reshape(units, 2)
    stored = np.ascontiguousarray(raw.reshape(rows, -1))
    return torch.from_numpy(stored), stored


def reference(stored: np.ndarray, qtype: int) -> torch.Tensor:
    """Return the weights as gguf-py dequantises them."""
    if qtype == T.F16:
        return torch.from_numpy(stored.view(np.float16).astype(np.float32))
    return torch.from_numpy(gguf.dequantize(stored, T(qtype)).astype(np.float32))


@pytest.mark.parametrize("extreme", [False, True], ids=["random", "extreme-scales"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda qtype: T(qtype).name)
def test_weights_are_exactly_gguf_pys_dequantised_weights(qtype, extreme):
    # Rows of two super-blocks, so every part of a K-quant's super-block and every block boundary is read.
    blocks, stored = random_blocks(qtype, 37, 512, extreme=extreme)
    dequantised = torch.ops.palaver.gguf_dequantise(blocks, qtype, 512)
    assert torch.equal(dequantised.view(torch.int32), reference(stored, qtype).view(torch.int32)), "not the same bits"


@pytest.mark.parametrize("qtype", TYPES, ids=lambda qtype: T(qtype).name)
def test_a_rows_product_is_the_same_bits_alone_and_in_any_batch(qtype):
    blocks, stored = random_blocks(qtype, 70, 512)
    x = torch.randn(41, 512, generator=torch.Generator().manual_seed(1))
    alone = torch.cat([torch.ops.palaver.gguf_linear(x[i : i + 1], blocks, qtype, 512) for i in range(len(x))])
    for size in (2, 3, 4, 7, 16, 32, 41):
        together = torch.cat(
            [torch.ops.palaver.gguf_linear(x[i : i + size], blocks, qtype, 512) for i in range(0, len(x), size)]
        )
        assert torch.equal(together, alone), f"batches of {size} changed the bits"
    exact = (x.double() @ reference(stored, qtype).double().T).float()  # float32 sums differ only in their order
    torch.testing.assert_close(alone, exact, rtol=1e-3, atol=1e-3)


def test_every_kernel_family_this_cpu_runs_reads_and_multiplies_to_the_same_bits():
    """AVX2 and, where the CPU has it, AVX-512: the same weights and products, alone and batched, for every type."""
    widest = torch.ops.palaver.set_kernels(0)
    x = torch.randn(19, 512, generator=torch.Generator().manual_seed(2))
    try:
        for qtype in TYPES:
            blocks, _ = random_blocks(qtype, 70, 512)
            results = []
            for family in range(1, widest + 1):
                torch.ops.palaver.set_kernels(family)
                weights = torch.ops.palaver.gguf_dequantise(blocks, qtype, 512)
                products = [torch.ops.palaver.gguf_linear(x[:size], blocks, qtype, 512) for size in (1, 2, 9, 19)]
                results.append([weights, *products])
            for other in results[1:]:
                assert all(torch.equal(a, b) for a, b in zip(results[0], other)), T(qtype).name
    finally:
        torch.ops.palaver.set_kernels(0)
    if widest < 2:  # an AVX2-only CPU refuses the AVX-512 family
        with pytest.raises(RuntimeError, match="cannot run kernel family 2"):
            torch.ops.palaver.set_kernels(2)


def test_quantised_weights_from_gguf_py_are_read_back_exactly():
    weights = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    for qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16):
        stored = quantize(weights, qtype)
        read = torch.ops.palaver.gguf_dequantise(torch.from_numpy(stored.view(np.uint8)), int(qtype), 256)
        assert torch.equal(read, reference(stored, qtype)), T(qtype).name


def test_the_linear_layer_keeps_leading_dimensions_and_adds_its_bias():
    blocks, stored = random_blocks(Q4_1, 8, 64)
    bias = torch.arange(8, dtype=torch.float32)
    layer = GGUFLinear(blocks, Q4_1, 64, bias)
    x = torch.randn(2, 3, 64)
    torch.testing.assert_close(layer(x), x @ reference(stored, Q4_1).T + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not hold rows of 65"):
        GGUFLinear(blocks, Q4_1, 65)
    k_blocks, _ = random_blocks(T.Q4_K, 4, 256)
    with pytest.raises(ValueError, match="do not hold rows of 128"):
        GGUFLinear(k_blocks[:, :72], T.Q4_K, 128)  # a K-quant's rows are whole super-blocks of 256


def test_embedding_rows_are_dequantised_on_lookup():
    blocks, stored = random_blocks(Q8_0, 50, 64)
    ids = torch.tensor([[3, 0, 49], [7, 7, 1]])
    assert torch.equal(GGUFEmbedding(blocks, Q8_0, 64)(ids), reference(stored, Q8_0)[ids])


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
        layers = [m for m in family.model.module.modules() if isinstance(m, GGUFLinear)]
        assert layers and all(layer.qtype == Q8_0 for layer in layers)
    default = load_model(Settings(model=str(chat_model), cache_dir=str(tmp_path))).family.model.module
    assert not [m for m in default.modules() if isinstance(m, GGUFLinear)], "off by default"


def test_quantising_skips_layers_whose_inputs_do_not_split_into_blocks():
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 5))
    assert quantise_linear_layers(model) == 1
    assert isinstance(model[0], GGUFLinear) and isinstance(model[1], nn.Linear)
