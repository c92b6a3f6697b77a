"""Loading a GGUF file's blocks into a transformers model: transformers' own logits, and float32 without the kernel."""

import subprocess
import sys

import torch
from servers import ROOT
from torch import nn

from commons import Settings
from palaver.engine.torch.loading import load_model


def float_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Embedding))]


def test_a_gguf_model_keeps_its_blocks_and_matches_transformers_own_loader(gguf_chat_model, tmp_path):
    blocked = load_model(Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path))).family.model.module
    float32 = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path), weights="float32")
    plain = load_model(float32).family.model.module
    assert float_layers(blocked) == [], "no float32 copy of a quantised weight is kept"
    assert blocked.lm_head.blocks is blocked.model.embed_tokens.blocks, "the tied head reads the embedding's blocks"
    assert isinstance(plain.lm_head, nn.Linear)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.inference_mode():
        # Q and K rows come back in transformers' order: the logits agree with its de-quantised model.
        torch.testing.assert_close(blocked(ids).logits, plain(ids).logits, rtol=1e-4, atol=1e-5)


def test_k_quants_q5_and_16_bit_floats_keep_their_blocks_too(k_quant_gguf_model, tmp_path):
    blocked = load_model(Settings(model=str(k_quant_gguf_model), cache_dir=str(tmp_path))).family.model.module
    plain = load_model(Settings(model=str(k_quant_gguf_model), cache_dir=str(tmp_path), weights="float32"))
    assert float_layers(blocked) == [], "every type in the file is read as stored"
    kinds = {module.extra_repr().split(",")[0] for module in blocked.modules() if hasattr(module, "blocks")}
    assert kinds == {"Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "F16", "BF16"}
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.inference_mode():
        torch.testing.assert_close(blocked(ids).logits, plain.family.model.module(ids).logits, rtol=1e-4, atol=1e-4)


def test_without_the_kernel_a_gguf_model_is_served_as_float32_and_the_log_says_so(gguf_chat_model, tmp_path):
    code = (
        "import logging, pathlib; import palaver.engine.torch.quantized as quantized; "
        "logging.basicConfig(level=logging.INFO); "
        "quantized.KERNEL_LIBRARY = pathlib.Path('/nowhere/palaver_kernels.so'); "
        "from commons import Settings; from palaver.engine.torch.loading import load_model; "
        f"m = load_model(Settings(model={str(gguf_chat_model)!r}, cache_dir={str(tmp_path)!r})).family.model.module; "
        "import torch; assert type(m.lm_head) is torch.nn.Linear; quantized.kernel_available()"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("GGUF block kernel unavailable (not built") == 1
    assert "float32 weights" in result.stderr


def test_parameters_go_to_the_meta_device_in_the_building_thread_alone():
    import threading

    from palaver.engine.torch.gguf_model import parameters_on_meta_in_this_thread

    inside, built = threading.Event(), threading.Event()
    devices = {}

    def build_on_meta() -> None:
        with parameters_on_meta_in_this_thread():
            inside.set()
            built.wait(10)  # another thread builds a model while this one is inside
            devices["builder"] = nn.Linear(4, 4).weight.device.type

    builder = threading.Thread(target=build_on_meta)
    builder.start()
    assert inside.wait(10)
    devices["other"] = nn.Linear(4, 4).weight.device.type
    built.set()
    builder.join(10)
    assert devices == {"builder": "meta", "other": "cpu"}, "accelerate's init_empty_weights gives both meta"
