"""The served models as /api/tags, /api/show and /api/ps list them, from the router and the models' files."""

from datetime import UTC, datetime, timedelta

import pytest

from palaver.core.errors import InvalidRequest
from palaver.web.ollama.models import (
    ModelTag,
    RunningModel,
    ShowRequest,
    ShowResponse,
    expires_at,
    loaded_names,
    parameter_lines,
)


def test_a_model_is_listed_and_shown_without_loading_it(make_router, gguf_chat_model):
    router = make_router(gguf_chat_model)
    tag = ModelTag.of(router, "chat-llama").model_dump(mode="json")
    assert tag["name"] == tag["model"] == "chat-llama" and tag["details"]["format"] == "gguf"
    assert tag["modified_at"].endswith("Z") and len(tag["digest"]) == 64
    shown = ShowResponse.of(router, "chat-llama")
    assert shown.capabilities == ["completion", "tools"] and shown.model_info["general.architecture"] == "llama"
    assert shown.modelfile.splitlines()[1] == "FROM chat-llama" and "PARAMETER num_predict" in shown.modelfile
    assert loaded_names(router) == [] and router.slots["chat-llama"].backend is None, "nothing was loaded"


def test_a_thinking_model_shows_the_thinking_capability(make_router, thinking_gguf_model):
    router = make_router(thinking_gguf_model)
    assert ShowResponse.of(router, "thinking-llama").capabilities == ["completion", "tools", "thinking"]
    assert router.slots["thinking-llama"].backend is None, "told from its file, without loading it"


def test_a_sentence_encoder_shows_the_embedding_capability_alone(make_router, sentence_bert_model):
    router = make_router(sentence_bert_model)
    name = router.default
    shown = ShowResponse.of(router, name)
    assert (
        shown.capabilities == ["embedding"] and shown.details.family == "bert" and shown.details.format == "safetensors"
    )
    assert ModelTag.of(router, name).name == name and router.slots[name].backend is None, "told from its files"


def test_parameters_are_the_models_defaults_under_ollamas_names(make_router, gguf_chat_model):
    router = make_router(gguf_chat_model, temperature=0.7, top_k=20, max_new_tokens=16)
    names = {line.split()[0]: line.split()[1] for line in parameter_lines(router.slots["chat-llama"])}
    assert names == {"num_predict": "16", "temperature": "0.7", "top_p": "0.9", "top_k": "20", "repeat_penalty": "1.1"}


def test_a_loaded_model_runs_until_keep_alive_unloads_it(make_router, gguf_chat_model):
    router = make_router(gguf_chat_model, keep_alive=300)
    router.wait_ready(30, "chat-llama")
    assert loaded_names(router) == ["chat-llama"]
    running = RunningModel.running(router, "chat-llama")
    soon = datetime.now(UTC) + timedelta(seconds=300)
    assert running.size > 0 and running.size_vram == 0 and running.context_length == 512
    assert soon - timedelta(seconds=60) < running.expires_at <= soon + timedelta(seconds=1)
    forever = make_router(gguf_chat_model, keep_alive=0)
    assert expires_at(forever, forever.slots["chat-llama"]) > datetime.now(UTC) + timedelta(days=365 * 100)


def test_show_takes_the_model_as_model_or_name():
    assert ShowRequest.parse({"name": "m"}).name == "m" and ShowRequest.parse({"model": "m", "verbose": True}).model
    with pytest.raises(InvalidRequest) as caught:
        ShowRequest.parse({"verbose": True})
    assert caught.value.param == "model"
