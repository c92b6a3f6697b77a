"""OpenAI's request objects: fields named as OpenAI names them, mapped onto the engine's parameters."""

from dataclasses import replace

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.web.openai.request_schemas import ChatCompletionRequest

BODY = {"model": "chat-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def parse_chat(**fields):
    return ChatCompletionRequest.parse({**BODY, **fields}, {"settings": Settings()})


@pytest.mark.parametrize(
    "fields, param, code, words",
    [
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
            "messages[0].tool_calls",
            None,
            "only assistant",
        ),
        ({"messages": [{"content": "x"}]}, "messages[0].role", None, "'messages[0].role' is required"),
        ({"messages": "hello"}, "messages", None, "a list of 1 to 256 messages"),
        ({"n": 9}, "n", None, "'n' must be an integer at least 1 and at most 8"),
        ({"max_tokens": 4, "max_completion_tokens": 4}, "max_tokens", None, "not both"),
        ({"stream_options": {"include_usage": True}}, "stream_options", None, "only with stream: true"),
        ({"max_tokens": "4"}, "max_tokens", None, "an integer at least 1 and at most 1024"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", None, "none, minimal, low, medium, high"),
        (
            {"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": False}},
            "reasoning_effort",
            None,
            "contradicts",
        ),
        ({"chat_template_kwargs": {"documents": []}}, "chat_template_kwargs.documents", None, "unknown field"),
    ],
)
def test_chat_requests_name_the_field_and_code(fields, param, code, words):
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(**fields)
    assert (caught.value.param, caught.value.code) == (param, code) and words in caught.value.message


def test_chat_requests_map_openai_names_to_the_engines_parameters():
    defaults = Settings(temperature=0.7, do_sample=False).generation_defaults()
    params = parse_chat(
        max_tokens=None, max_completion_tokens=9, temperature=0.5, stop="###", n=1, logprobs=None
    ).generation_params(defaults)
    assert (params.max_new_tokens, params.temperature, params.do_sample, params.stop) == (9, 0.5, True, ("###",))
    assert parse_chat(temperature=0).generation_params(defaults).greedy
    assert parse_chat().generation_params(defaults) == replace(defaults, max_new_tokens=4)


@pytest.mark.parametrize(
    "response_format, param, words",
    [
        ({"type": "json_schema"}, "response_format.json_schema", "required with type json_schema"),
        ({"type": "xml"}, "response_format.type", "must be one of text, json_object, json_schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}},
            "response_format.json_schema.schema",
            "'uniqueItems' at #, which Palaver cannot enforce",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {"a": {"not": {}}}}}},
            "response_format.json_schema.schema",
            "'not' at #/properties/a",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}},
            "response_format.json_schema.name",
            "",
        ),
    ],
)
def test_a_response_format_that_cannot_be_enforced_is_refused_naming_the_keyword(response_format, param, words):
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(response_format=response_format)
    assert caught.value.param == param and words in caught.value.message, caught.value.message


def test_a_response_format_becomes_the_schema_the_engine_enforces():
    defaults = Settings().generation_defaults()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    given = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert parse_chat(response_format=given).generation_params(defaults).json_schema == (
        '{"type":"object","properties":{"a":{"type":"integer"}}}'  # the schema's own order: replies follow it
    )
    assert parse_chat(response_format={"type": "json_object"}).generation_params(defaults).json_schema == (
        '{"type":"object"}'
    )
    assert parse_chat(response_format={"type": "text"}).generation_params(defaults).json_schema is None


def test_an_empty_list_of_tools_is_no_tools():
    assert parse_chat(tools=[]).tool_use() is None and parse_chat(tools=[], tool_choice="auto").tool_use() is None
    assert parse_chat(tools=[], tool_choice="none").tool_use() is None


@pytest.mark.parametrize(
    "choice, words",
    [
        ("required", "'tool_choice' 'required' needs at least one function in 'tools'; it has none"),
        ({"type": "function", "function": {"name": "f"}}, "'tool_choice' a function needs at least one function"),
    ],
)
def test_a_tool_choice_without_tools_says_what_it_lacks(choice, words):
    for tools in ([], None):
        with pytest.raises(InvalidRequest) as caught:
            parse_chat(tool_choice=choice, **({"tools": tools} if tools is not None else {}))
        assert caught.value.param == "tool_choice" and words in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    "fields, thinking",
    [
        ({}, None),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, False),
        ({"reasoning_effort": "low"}, True),
        ({"chat_template_kwargs": {"enable_thinking": False}}, False),
        ({"reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": False}}, False),
    ],
)
def test_reasoning_effort_and_enable_thinking_say_whether_a_thinking_model_thinks(fields, thinking):
    assert parse_chat(**fields).generation_params(Settings().generation_defaults()).thinking is thinking
