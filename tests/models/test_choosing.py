"""Choosing a repository's file: by quantisation as llama.cpp's -hf does, by name, a split model's parts together."""

import pytest

from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource
from palaver.models.choosing import HubFile, choices, choose, quantisation_in

QUANTISED = [
    "README.md",
    "Model-3B-IQ4_XS.gguf",
    "Model-3B-Q4_K.gguf",
    "Model-3B-Q4_K_M.gguf",
    "Model-3B-Q4_K_S.gguf",
    "Model-3B-Q8_0.gguf",
    "mmproj-Model-3B-F16.gguf",
    "Q6_K/Model-3B-Q6_K-00001-of-00002.gguf",
    "Q6_K/Model-3B-Q6_K-00002-of-00002.gguf",
]


def listing(*paths: str) -> list[HubFile]:
    return [HubFile(path, 10, "0" * 64) for path in paths]


def chosen(spec: str, paths=QUANTISED) -> list[str]:
    return [file.path for file in choose(HubSource.parse(spec), listing(*paths)).files]


@pytest.mark.parametrize(
    "spec, paths",
    [
        ("hf:o/r:Q4_K_M", ["Model-3B-Q4_K_M.gguf"]),
        ("hf:o/r:q4_k", ["Model-3B-Q4_K.gguf"]),  # any case; Q4_K is not Q4_K_M nor Q4_K_S
        ("hf:o/r:IQ4_XS", ["Model-3B-IQ4_XS.gguf"]),
        ("hf:o/r", ["Model-3B-Q4_K_M.gguf"]),  # none named: Q4_K_M, as llama.cpp and Ollama take
        ("hf:o/r:Q6_K", ["Q6_K/Model-3B-Q6_K-00001-of-00002.gguf", "Q6_K/Model-3B-Q6_K-00002-of-00002.gguf"]),
        ("hf:o/r/Model-3B-Q8_0.gguf", ["Model-3B-Q8_0.gguf"]),
        ("hf:o/r/Q6_K/Model-3B-Q6_K-00001-of-00002.gguf", [
            "Q6_K/Model-3B-Q6_K-00001-of-00002.gguf", "Q6_K/Model-3B-Q6_K-00002-of-00002.gguf"
        ]),
    ],
)  # fmt: skip
def test_a_source_names_one_model_and_all_its_parts(spec, paths):
    assert chosen(spec) == paths


def test_with_no_quantisation_named_a_repository_of_one_model_gives_it():
    assert chosen("hf:o/r", ["model.gguf", "mmproj-model-f16.gguf"]) == ["model.gguf"]


@pytest.mark.parametrize(
    "spec, paths, words",
    [
        ("hf:o/r:Q5_K_M", QUANTISED, ["no file for the quantisation Q5_K_M", "IQ4_XS, Q4_K, Q4_K_M", "Q8_0",
                                      "hf:o/r:QUANT"]),
        ("hf:o/r@v2:Q5_0", QUANTISED, ["hf:o/r@v2:QUANT"]),
        ("hf:o/r", ["a.gguf", "b.gguf"], ["more than one model", "a.gguf, b.gguf", "hf:o/r/FILE.gguf"]),
        ("hf:o/r:Q4_0", ["a-Q4_0.gguf", "b-Q4_0.gguf"], ["2 files of o/r carry Q4_0", "a-Q4_0.gguf, b-Q4_0.gguf"]),
        ("hf:o/r/missing.gguf", QUANTISED, ["has no file missing.gguf"]),
        ("hf:o/r:Q4_0", ["README.md", "mmproj-x-f16.gguf"], ["holds no GGUF file"]),
    ],
)  # fmt: skip
def test_a_choice_missing_or_ambiguous_is_refused_listing_the_choices(spec, paths, words):
    with pytest.raises(ConfigurationError) as caught:
        chosen(spec, paths)
    assert str(caught.value).startswith(spec) and all(word in str(caught.value) for word in words), caught.value


def test_a_model_is_named_by_the_quantisation_its_path_carries():
    assert quantisation_in("sub/Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quantisation_in("qwen2.5-0.5b-instruct-q8_0-00001-of-00003.gguf") == "Q8_0"
    assert quantisation_in("gemma-3-1b-it-BF16.gguf") == "BF16" and quantisation_in("model.gguf") == ""
    split = [c for c in choices(listing(*QUANTISED)) if len(c.files) > 1]
    labels = [(c.quantisation, c.label) for c in split]
    assert labels == [("Q6_K", "Q6_K/Model-3B-Q6_K-00001-of-00002.gguf (1 of 2 parts)")]
