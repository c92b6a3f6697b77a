"""Hub sources: hf:OWNER/REPO[@REV][:QUANT] and hf:OWNER/REPO[@REV]/FILE.gguf, read, written back and named."""

import pytest

from palaver.backends.model_list import configured_models
from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource, from_ollama_name, is_hub_source


@pytest.mark.parametrize(
    "spec, repo, revision, quantisation, filename, name",
    [
        ("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "main", "Q4_K_M", "",
         "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
        ("hf:owner/repo", "owner/repo", "main", "", "", "owner/repo"),
        ("hf:owner/repo@v1.2:iq4_xs", "owner/repo", "v1.2", "iq4_xs", "", "owner/repo:iq4_xs"),
        ("hf:owner/repo/sub/model-Q8_0.gguf", "owner/repo", "main", "", "sub/model-Q8_0.gguf", "model-Q8_0"),
        ("hf:owner/repo@0123abcd/m-00001-of-00002.gguf", "owner/repo", "0123abcd", "", "m-00001-of-00002.gguf",
         "m-00001-of-00002"),
    ],
)  # fmt: skip
def test_a_source_is_read_written_back_and_named(spec, repo, revision, quantisation, filename, name):
    source = HubSource.parse(spec)
    read = (source.repo, source.revision, source.quantisation, source.filename)
    assert read == (repo, revision, quantisation, filename)
    assert source.name == name and HubSource.parse(str(source)) == source
    assert str(HubSource.parse("hf:owner/repo@main:Q4_0")) == "hf:owner/repo:Q4_0", "the default revision is left out"


@pytest.mark.parametrize(
    "spec", ["hf:", "hf:repo-only", "hf:a/b/c", "hf:a/b:Q4 0", "hf:a/b/../../etc/passwd.gguf", "hf:a/b@:Q4", "x" * 500]
)
def test_a_malformed_source_is_refused_saying_how_one_is_written(spec):
    with pytest.raises(ConfigurationError, match="hf:OWNER/REPO:QUANT or hf:OWNER/REPO/FILE.gguf") as caught:
        HubSource.parse(spec)
    assert len(str(caught.value)) < 400, "a long value is cut short in the message"


def test_settings_and_palaver_models_name_a_hub_source_without_asking_the_hub():
    assert Settings(model="hf:owner/repo-GGUF:Q4_K_M").model_name == "owner/repo-GGUF:Q4_K_M"
    assert Settings(model="hf:owner/repo/tiny-Q8_0.gguf").model_name == "tiny-Q8_0"
    entries = configured_models(Settings(models="hf:owner/a-GGUF:Q4_0,small=hf:owner/b/b.gguf"))
    assert [(e.name, e.source) for e in entries] == [
        ("owner/a-GGUF:Q4_0", "hf:owner/a-GGUF:Q4_0"),
        ("small", "hf:owner/b/b.gguf"),
    ]


def test_ollama_names_of_hub_files_read_as_hub_sources():
    assert from_ollama_name("hf.co/owner/repo:Q4_K_M") == "hf:owner/repo:Q4_K_M"
    assert from_ollama_name("huggingface.co/owner/repo:latest") == "hf:owner/repo"
    assert from_ollama_name("qwen3:0.6b") == "qwen3:0.6b" and not is_hub_source("qwen3:0.6b")
