"""PALAVER_MODELS read into names and sources, the default first; mistakes named at start-up."""

import pytest

from commons import Settings
from palaver.backends.model_list import ModelEntry, configured_models
from palaver.core.errors import ConfigurationError


def test_one_model_is_palaver_model_under_its_usual_name():
    assert configured_models(Settings(model="/models/tiny.gguf")) == [ModelEntry("tiny", "/models/tiny.gguf")]
    assert configured_models(Settings()) == [ModelEntry("SmolLM2-135M-Instruct", "")]


def test_each_model_is_named_or_named_for_its_source_and_the_first_is_the_default():
    settings = Settings(models=" small=/m/a.gguf , microsoft/DialoGPT-medium,smol=embedded ,, ")
    assert configured_models(settings) == [
        ModelEntry("small", "/m/a.gguf"),
        ModelEntry("microsoft/DialoGPT-medium", "microsoft/DialoGPT-medium"),
        ModelEntry("smol", ""),
    ]
    entry = configured_models(settings)[0]
    assert entry.settings(settings).model == "/m/a.gguf" and entry.settings(settings).models == ""


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("a=/x.gguf,a=/y.gguf", "the name 'a' is given twice"),
        ("bad name=/x.gguf", "'bad name' is not a model name"),
        ("=/x.gguf", "'' is not a model name"),
        (",,", "lists no model"),
        ("a=/x.gguf<script>", None),
    ],
)
def test_mistakes_are_named_at_start(models, message):
    if message is None:  # a source is taken as written; loading it says what is wrong
        assert configured_models(Settings(models=models))[0].source == "/x.gguf<script>"
        return
    with pytest.raises(ConfigurationError, match=message):
        configured_models(Settings(models=models))


def test_an_upstream_serves_its_own_models():
    with pytest.raises(ConfigurationError, match="PALAVER_UPSTREAM_MODEL"):
        configured_models(Settings(models="a=/x.gguf", backend="openai", upstream_url="http://u/v1"))
