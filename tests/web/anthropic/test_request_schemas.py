"""Anthropic's request objects: fields named as Anthropic names them, mapped onto the engine's request."""

from dataclasses import replace

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.web.anthropic.request_schemas import MessagesInput, MessagesRequest

BODY = {"model": "chat-llama", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


def parse(**fields):
    return MessagesRequest.parse({**BODY, **fields}, {"settings": Settings()})


def test_anthropic_names_map_to_the_engines_parameters():
    defaults = Settings(temperature=0.7, do_sample=False).generation_defaults()
    params = parse(max_tokens=9, temperature=0.5, top_p=0.9, top_k=5, stop_sequences=["###"]).generation_params(
        defaults
    )
    assert (params.max_new_tokens, params.temperature, params.do_sample) == (9, 0.5, True)
    assert (params.top_p, params.top_k, params.stop) == (0.9, 5, ("###",))
    assert parse(temperature=0).generation_params(defaults).greedy
    assert parse().generation_params(defaults) == replace(defaults, max_new_tokens=4, thinking=False)


def test_metadata_and_disabled_thinking_change_nothing():
    defaults = Settings().generation_defaults()
    given = parse(metadata={"user_id": "u-1"}, thinking={"type": "disabled"})
    assert given.generation_params(defaults) == parse().generation_params(defaults)


def test_thinking_is_asked_of_a_thinking_model_only_when_enabled():
    defaults = Settings().generation_defaults()
    enabled = parse(thinking={"type": "enabled", "budget_tokens": 2048}).generation_params(defaults)
    assert enabled.thinking is True and parse().generation_params(defaults).thinking is False


@pytest.mark.parametrize(
    "fields, param, code, words",
    [
        ({"max_tokens": None}, "max_tokens", None, "'max_tokens' is required"),
        ({"max_tokens": 100_000}, "max_tokens", None, "'max_tokens' must be an integer at least 1 and at most 1024"),
        ({"temperature": 3}, "temperature", None, "at least 0.0 and at most 2.0"),
        ({"top_k": -1}, "top_k", None, "'top_k' must be an integer at least 0"),
        ({"stop_sequences": ["a"] * 5}, "stop_sequences", None, "at most 4"),
        ({"model": None}, "model", None, "'model' is required"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", None, "takes a 'budget_tokens'"),
        ({"thinking": {"type": "adaptive"}}, "thinking.type", None, "enabled, disabled"),
        ({"mcp_servers": []}, "mcp_servers", None, "unknown field 'mcp_servers'"),
        ({"metadata": {"user_id": "u", "x": 1}}, "metadata.x", None, "unknown field 'x'"),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0]",
            "unsupported_parameter",
            "web_search_20250305",
        ),
        ({"tools": [{**WEATHER, "input_schema": {"type": "array"}}]}, "tools[0].input_schema", None, "type object"),
        ({"tools": [{**WEATHER, "input_schema": {"not": {}}}]}, "tools[0].input_schema", None, "'not' at #"),
        ({"tools": [WEATHER, WEATHER]}, "tools", None, "'get_weather' is named twice"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema", None, "'tools[0].input_schema' is required"),
        ({"tool_choice": {"type": "any"}}, "tool_choice", None, "needs a tool in 'tools'"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}},
            "tool_choice",
            None,
            "it has: get_weather",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "tool_choice.name", None, "takes a 'name'"),
        ({"tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, "tool_choice.type", None, "one of auto, any"),
    ],
)
def test_requests_name_the_field_and_its_range(fields, param, code, words):
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    assert (caught.value.param, caught.value.code) == (param, code) and words in caught.value.message, (
        caught.value.message
    )


@pytest.mark.parametrize(
    "choice, mode, named, parallel",
    [
        (None, "auto", None, True),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", None, False),
        ({"type": "any"}, "required", None, True),
        ({"type": "tool", "name": "get_time"}, "named", "get_time", True),
        ({"type": "none"}, "none", None, True),
    ],
)
def test_tool_choice_maps_onto_the_engines_tool_use(choice, mode, named, parallel):
    given = parse(tools=[WEATHER, CLOCK], tool_choice=choice)
    use = given.tool_use()
    assert (use.choice, use.named, use.parallel) == (mode, named, parallel)
    assert [function.name for function in use.functions] == ["get_weather", "get_time"]
    assert (given.reply_grammar() is None) == (mode == "none")


def test_tools_build_their_grammar_once_with_the_request(monkeypatch):
    from helpers import count_grammar_work

    work = count_grammar_work(monkeypatch)
    grammar = parse(tools=[WEATHER], tool_choice={"type": "any"}).reply_grammar()
    assert grammar is not None and grammar.param == "tools"
    assert len(work.built) == 2, "the tool's schema is checked once, then the calls' grammar built once"


def test_no_tools_is_no_tool_use_and_no_grammar():
    assert parse(tools=[]).tool_use() is None and parse(tools=[]).reply_grammar() is None


def test_count_tokens_takes_the_conversation_without_generation_fields():
    body = {key: value for key, value in BODY.items() if key != "max_tokens"}
    assert MessagesInput.parse({**body, "tools": [CLOCK]}, {"settings": Settings()}).tool_use() is not None
    with pytest.raises(InvalidRequest) as caught:
        MessagesInput.parse({**body, "temperature": 0}, {"settings": Settings()})
    assert caught.value.param == "temperature"
