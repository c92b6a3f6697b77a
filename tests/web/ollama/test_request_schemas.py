"""Ollama's /api/chat and /api/generate bodies: checked, and turned into the engine's parameters and grammar."""

import json

import pytest

from palaver.core.config import Settings
from palaver.core.errors import InvalidRequest, NotFound
from palaver.core.json_schemas import grammar_problem
from palaver.web.ollama.request_schemas import ChatRequest, GenerateRequest, served_model

HELLO = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def chat(**fields) -> ChatRequest:
    return ChatRequest.parse({"model": "m", "messages": HELLO, **fields}, {"settings": Settings()})


def generate(**fields) -> GenerateRequest:
    return GenerateRequest.parse({"model": "m", "prompt": "hi", **fields}, {"settings": Settings()})


def test_format_holds_the_reply_to_any_object_or_a_schema():
    assert chat().reply_grammar() is None and chat(format="").answer_schema is None
    assert chat().stream, "Ollama streams unless asked not to"
    assert json.loads(chat(format="json").answer_schema) == {"type": "object"}
    given = chat(format=SCHEMA)
    assert json.loads(given.answer_schema) == SCHEMA and given.reply_grammar().param == "format"
    params = given.generation_params(Settings().generation_defaults())
    assert json.loads(params.json_schema) == SCHEMA and grammar_problem(given.reply_grammar().text) is None


def test_tools_hold_the_reply_to_calls_and_keep_the_formats_schema_for_an_answer():
    given = chat(tools=[WEATHER], format=SCHEMA)
    assert given.tool_use().choice == "auto" and given.reply_grammar().param == "tools"
    assert '"ok"' in given.reply_grammar().text, "an answer beside the calls follows the format"
    named = chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.tool_use().choice == "named" and named.tool_use().named == "get_weather"
    assert chat(tools=[]).tool_use() is None


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"format": "yaml"}, "format", 'must be "json" or a JSON schema'),
        ({"format": {"type": "object", "propertyNames": {}}}, "format", "uses the keyword 'propertyNames'"),
        ({"think": "max"}, "think", "true, false or one of low, medium, high"),
        ({"logprobs": True}, "logprobs", "/v1/chat/completions reports logprobs"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "'get_weather' is named twice"),
        ({"tool_choice": "required"}, "tool_choice", "needs at least one function"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", "lacks"),
        ({"images": []}, "images", "unknown field 'images'"),
    ],
)
def test_refused_chat_fields_are_named(fields, param, words):
    with pytest.raises(InvalidRequest) as caught:
        chat(**fields)
    assert caught.value.param == param and words in caught.value.message


def test_a_generation_is_a_user_message_or_with_raw_the_prompt_itself():
    given = generate(system="Be brief.", think=False, images=[], suffix="", template="", context=[])
    assert [(m.role, m.content) for m in given.conversation()] == [("system", "Be brief."), ("user", "hi")]
    assert generate(raw=True).raw and generate(prompt="").loads_only and not generate().loads_only
    assert generate(keep_alive=0).unloads_after and not generate(keep_alive="5m").unloads_after


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"template": "{{ .Prompt }}"}, "template", "template is not supported"),
        ({"raw": True, "system": "x"}, "system", "no place in a raw prompt"),
        ({"suffix": "end"}, "suffix", "fill in the middle"),
        ({"images": ["aGk="]}, "images", "images are not supported"),
        ({"context": [1, 2, 3]}, "context", "deprecated by Ollama"),
        ({"tools": [WEATHER]}, "tools", "unknown field 'tools'"),
    ],
)
def test_refused_generate_fields_are_named(fields, param, words):
    with pytest.raises(InvalidRequest) as caught:
        generate(**fields)
    assert caught.value.param == param and words in caught.value.message


@pytest.mark.parametrize("think, thinking", [(None, None), (False, False), (True, True), ("low", True), ("high", True)])
def test_think_says_whether_a_thinking_model_thinks(think, thinking):
    fields = {} if think is None else {"think": think}
    assert chat(**fields).generation_params(Settings().generation_defaults()).thinking is thinking
    assert generate(**fields).thinking_wanted is thinking


def test_thinking_asked_of_a_model_that_does_not_think_is_refused_as_ollama_refuses_it(
    make_router, gguf_chat_model, thinking_gguf_model
):
    plain = make_router(gguf_chat_model)
    assert chat(model="chat-llama", think=False).served_model(plain) == "chat-llama"
    for think in (True, "medium"):
        with pytest.raises(InvalidRequest) as caught:
            chat(model="chat-llama:latest", think=think).served_model(plain)
        assert caught.value.param == "think" and caught.value.message == '"chat-llama:latest" does not support thinking'
    thinking = make_router(thinking_gguf_model)
    assert generate(model="thinking-llama", think=True).served_model(thinking) == "thinking-llama"


def test_a_model_is_named_as_configured_or_as_ollamas_name_latest(make_router, gguf_chat_model):
    router = make_router(gguf_chat_model)
    assert served_model(router, "chat-llama") == served_model(router, "chat-llama:latest") == "chat-llama"
    with pytest.raises(NotFound) as caught:
        served_model(router, "llama3.2")
    assert caught.value.message.startswith('model "llama3.2" not found') and "'chat-llama'" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        served_model(router, "")
    assert caught.value.param == "model" and "'chat-llama'" in caught.value.message
