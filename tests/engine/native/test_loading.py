"""Choosing the native step: a Llama GGUF file loads without torch, within its memory limit, else falls back."""

import json
import subprocess
import sys
import threading

import pytest
from helpers import raising
from servers import ROOT

from commons import Message, Settings
from palaver.engine import machine
from palaver.engine.gguf.file import read_gguf
from palaver.engine.machine import HEADROOM_BYTES, cgroup_limit, kernel_family_name, kv_budget
from palaver.engine.model_sources import embedded_gguf_path
from palaver.engine.native import binding
from palaver.engine.native import loading as native_loading
from palaver.engine.native.loading import PAGE_TOKENS, llama_config, load_native
from palaver.engine.torch.loading import gguf_metadata_dir


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_llama_gguf_file_is_served_natively_without_torch_or_transformers(gguf_chat_model, tmp_path):
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO)\n"
        "from commons import Settings; from palaver.engine.engine import Engine, GenerationRequest\n"
        "from palaver.core.types import Message\n"
        f"settings = Settings(model={str(gguf_chat_model)!r}, cache_dir={str(tmp_path)!r}, temperature=0.0)\n"
        "engine = Engine(settings); engine.start(); assert engine.wait_ready(60)\n"
        "reply = engine.generate(GenerationRequest(settings.generation_defaults(), [Message('user', 'hi')]))\n"
        "assert reply.usage.completion_tokens > 0, reply\n"
        "print(engine.describe()['engine'], sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
        "engine.close()\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "native []"


def test_the_kernel_family_in_use_is_named_in_the_layout_and_the_fingerprint(gguf_chat_model, tmp_path):
    widest = kernel_family_name(binding.library().pv_kernels_widest())
    loaded = {
        kernels: load_native(Settings(model="", cache_dir=str(tmp_path), kernels=kernels), "tiny", str(gguf_chat_model))
        for kernels in ("auto", "avx2")
    }
    assert loaded["auto"].gguf["kernels"] == widest and loaded["avx2"].gguf["kernels"] == "avx2"
    assert (loaded["auto"].fingerprint == loaded["avx2"].fingerprint) == (widest == "avx2")
    for model in loaded.values():
        model.release()


def test_without_the_library_the_server_says_so_once_and_serves_through_transformers(gguf_chat_model, tmp_path):
    code = (
        "import logging, pathlib; logging.basicConfig(level=logging.INFO)\n"
        "import palaver.engine.native.binding as native; native.LIBRARY = pathlib.Path('/nowhere/palaver_native.so')\n"
        "from commons import Settings; from palaver.engine.native.loading import load_native\n"
        f"settings = Settings(model={str(gguf_chat_model)!r}, cache_dir={str(tmp_path)!r})\n"
        f"assert load_native(settings, 'tiny', {str(gguf_chat_model)!r}) is None\n"
        f"assert load_native(settings, 'tiny', {str(gguf_chat_model)!r}) is None\n"
        "native_only = Settings(model=settings.model, cache_dir=settings.cache_dir, engine='native')\n"
        f"load_native(native_only, 'tiny', {str(gguf_chat_model)!r})\n"
    )
    result = run_python(code)
    assert "PALAVER_ENGINE=native cannot serve tiny: not built" in result.stderr, "native alone refuses to start"
    assert result.stderr.count("the native step is unavailable (not built") == 1
    assert "tiny runs through transformers: not built" in result.stderr


def test_a_kv_type_the_transformers_path_cannot_keep_is_said_to_apply_to_the_native_step_only(
    gguf_chat_model, tmp_path, caplog
):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path), engine="transformers", kv_type="q8_0")
    with caplog.at_level("WARNING", logger="palaver.loading"):
        assert load_native(settings, "tiny", str(gguf_chat_model)) is None
    assert "PALAVER_KV_TYPE=q8_0 applies to the native step only" in caplog.text


@pytest.mark.parametrize(
    ("settings", "source", "reason"),
    [
        ({"engine": "transformers"}, "x.gguf", "PALAVER_ENGINE=transformers"),
        ({"weights": "float32"}, "x.gguf", "float32"),
        ({}, "org/model", "not a GGUF file"),
    ],
)
def test_what_the_native_step_does_not_serve_is_named(settings, source, reason):
    assert reason in native_loading.refusal(Settings(**settings), source)


def test_the_config_read_from_the_file_is_the_one_transformers_reads(embedded_cache):
    ours = llama_config(read_gguf(embedded_gguf_path()))
    theirs = json.loads((gguf_metadata_dir(embedded_gguf_path(), str(embedded_cache)) / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        assert ours[key] == theirs[key], key
    assert ours["num_key_value_heads"] == theirs["num_key_value_heads"]
    assert ours["max_position_embeddings"] == theirs["max_position_embeddings"]
    assert ours["rms_norm_eps"] == pytest.approx(theirs["rms_norm_eps"])
    assert ours["rope_parameters"]["rope_theta"] == theirs["rope_parameters"]["rope_theta"]


def test_the_kv_budget_is_what_the_memory_limit_leaves(gguf_chat_model, tmp_path, monkeypatch):
    resident = 10**8
    monkeypatch.setattr(machine, "resident_bytes", lambda: resident)
    assert kv_budget(0, 10**8, 12345) == 12345, "no limit: room for every row's full context"
    left = kv_budget(resident + 10**8 + HEADROOM_BYTES + 10**7, 10**8, 10**12)
    assert 0 < left <= 10**7
    with pytest.raises(ValueError, match="PALAVER_MEMORY_LIMIT"):
        kv_budget(resident, 10**8, 10**12)
    limit = resident + gguf_chat_model.stat().st_size + HEADROOM_BYTES + 4 * 10**6
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path), memory_limit=limit)
    model = load_native(settings, "tiny", str(gguf_chat_model)).family.model
    assert 0 < model.cache.max_pages * model.cache.page_bytes <= 4 * 10**6
    assert model.cache.page_bytes == PAGE_TOKENS * model.weights.kv_bytes_per_token()


def test_a_q8_0_kv_cache_holds_nearly_twice_the_tokens_in_the_same_limit_and_is_named(
    gguf_chat_model, tmp_path, monkeypatch
):
    monkeypatch.setattr(machine, "resident_bytes", lambda: 10**8)
    config = llama_config(read_gguf(gguf_chat_model))
    head_dim = config["head_dim"]
    f16_token = config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim * 2
    # Room for 40 pages of float16: less than every row's full context, so the limit is what bounds both caches.
    limit = 10**8 + gguf_chat_model.stat().st_size + HEADROOM_BYTES + 40 * PAGE_TOKENS * f16_token
    loaded = {
        kv_type: load_native(
            Settings(model="", cache_dir=str(tmp_path), memory_limit=limit, kv_type=kv_type),
            "tiny",
            str(gguf_chat_model),
        )
        for kv_type in ("f16", "q8_0")
    }
    tokens = {kv_type: model.family.model.cache.max_pages * PAGE_TOKENS for kv_type, model in loaded.items()}
    assert tokens["f16"] == 40 * PAGE_TOKENS
    # A float16 vector of head_dim values against head_dim int8 values and a float16 scale for every 32.
    ratio = 2 * head_dim / ((head_dim + 31) // 32 * 2 + head_dim)
    assert tokens["q8_0"] >= 0.95 * ratio * tokens["f16"]
    assert loaded["q8_0"].gguf["kv_type"] == "q8_0" and loaded["f16"].gguf["kv_type"] == "f16"
    assert loaded["q8_0"].fingerprint != loaded["f16"].fingerprint  # the replies' arithmetic differs
    family = loaded["q8_0"].family
    params = Settings(temperature=0.0, max_new_tokens=4).generation_defaults()
    reply = family.generate(family.build_prompt([Message("user", "hi")], 4), params, threading.Event())
    assert reply.usage.completion_tokens >= 1
    for model in loaded.values():
        model.release()


def test_the_cgroup_limit_is_read_where_there_is_one(tmp_path, monkeypatch):
    files = [tmp_path / "memory.max", tmp_path / "limit_in_bytes"]
    monkeypatch.setattr(machine, "CGROUP_LIMITS", tuple(files))
    assert cgroup_limit() == 0
    files[1].write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert cgroup_limit() == 0
    files[0].write_text("max\n")
    assert cgroup_limit() == 0
    files[0].write_text("536870912\n")
    assert cgroup_limit() == 536870912


def test_a_limit_too_small_for_one_context_is_refused_at_start(gguf_chat_model, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "resident_bytes", lambda: 10**8)  # what this process holds, held still
    limit = 10**8 + gguf_chat_model.stat().st_size + HEADROOM_BYTES + 1000
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path), memory_limit=limit)
    with pytest.raises(ValueError, match="fewer than one context of 512"):
        load_native(settings, "tiny", str(gguf_chat_model))


@pytest.mark.parametrize(
    ("fixture", "architecture", "end_of_turn"),
    [("qwen2_gguf_model", "qwen2", "<|im_end|>"), ("gemma3_gguf_model", "gemma3", "<|end|>")],
)
def test_a_file_is_served_natively_with_its_own_template_and_stops_at_the_end_of_a_turn(
    request, tmp_path, fixture, architecture, end_of_turn
):
    path = request.getfixturevalue(fixture)
    settings = Settings(model=str(path), cache_dir=str(tmp_path), temperature=0.0, max_new_tokens=4)
    loaded = load_native(settings, f"tiny-{architecture}", str(path))
    assert loaded is not None and loaded.engine == "native"
    assert loaded.gguf["architecture"] == architecture and loaded.gguf["path"] == "native"
    family = loaded.family
    assert end_of_turn in family.tokenizer.chat_template, "the template comes from the file"
    end = family.tokenizer.backend.token_to_id(end_of_turn)
    assert end in family.stop_token_ids, "the template's end of turn stops a reply, as in llama.cpp"
    prompt = family.build_prompt([Message("user", "hello")], 4)
    reply = family.generate(prompt, settings.generation_defaults(), threading.Event())
    assert reply.usage.completion_tokens >= 1 and reply.finish_reason in ("stop", "length")


def test_a_sentencepiece_file_is_served_natively_with_the_tokenizer_transformers_builds(
    sentencepiece_gguf_model, tmp_path, monkeypatch
):
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from palaver.engine.native import binding as native
    from palaver.engine.torch.loading import load_model

    settings = Settings(model=str(sentencepiece_gguf_model), cache_dir=str(tmp_path))
    loaded = load_native(settings, "spm", str(sentencepiece_gguf_model))
    assert loaded is not None and loaded.engine == "native", "a SentencePiece vocabulary no longer sends it away"
    ours = loaded.family.tokenizer
    theirs = AutoTokenizer.from_pretrained(sentencepiece_gguf_model.parent, gguf_file=sentencepiece_gguf_model.name)
    for text in ["hello there", "  the quick  fox", "tell me é 123 <|end|>", "palaver\nis a chat server"]:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == theirs.decode(theirs.encode(text), True)
    messages = [Message("user", "hello there how are you")]
    prompt = loaded.family.build_prompt(messages, 8).input_ids
    reference = load_model(Settings(**{**settings.__dict__, "engine": "transformers", "weights": "float32"})).family
    assert prompt == reference.build_prompt(messages, 8).input_ids, "the chat template and tokens are the same"
    gguf = read_gguf(sentencepiece_gguf_model)
    model = native.NativeModel(sentencepiece_gguf_model, llama_config(gguf), gguf.tensors, threads=2)
    cache = model.new_cache(16, 16)
    sequence = cache.new_sequence()
    assert cache.reserve(sequence, len(prompt))
    got = cache.step([sequence], [prompt], [True])[0]
    with torch.inference_mode():
        want = reference.model.module(torch.tensor([prompt])).logits[0, -1].numpy()
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max() and got.argmax() == want.argmax()
    cache.close()
    model.close()
    # A second start reads the tokenizer the first one cached: no child process, so no transformers.
    monkeypatch.setattr(native_loading.subprocess, "run", raising(AssertionError("a child was started again")))
    assert load_native(settings, "spm", str(sentencepiece_gguf_model)) is not None
