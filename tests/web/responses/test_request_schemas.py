"""The Responses API's request: OpenAI's names mapped onto the engine's request, and what cannot be honoured refused."""

from dataclasses import replace

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import grammar_problem
from palaver.core.types import Message
from palaver.web.responses.request_schemas import ResponsesRequest

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
JSON_SCHEMA = {"format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True}}


def parse(**fields):
    return ResponsesRequest.parse({"model": "m", "input": "hi", **fields}, {"settings": Settings()})


def refusal(**fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    return caught.value


def test_openais_names_map_to_the_engines_parameters():
    defaults = Settings(temperature=0.7, do_sample=False).generation_defaults()
    params = parse(max_output_tokens=9, temperature=0.5, top_p=0.9).generation_params(defaults)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.do_sample) == (9, 0.5, 0.9, True)
    assert parse(temperature=0).generation_params(defaults).greedy
    assert parse().generation_params(defaults) == defaults and parse().store and not parse().stream


def test_fields_that_change_nothing_are_accepted_at_their_neutral_values():
    defaults = Settings().generation_defaults()
    neutral = parse(
        background=False,
        include=[],
        top_logprobs=0,
        service_tier="auto",
        prompt_cache_retention="in_memory",
        prompt_cache_key="k",
        user="u",
        safety_identifier="s",
        metadata={"a": "b"},
        reasoning={"summary": "auto"},
        text={"format": {"type": "text"}, "verbosity": "medium"},
        stream=True,
        stream_options={"include_obfuscation": True},
        max_tool_calls=None,
    )
    assert neutral.generation_params(defaults) == parse().generation_params(defaults)
    assert neutral.reply_grammar() is None


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"background": True}, "background"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
        ({"max_tool_calls": 1}, "max_tool_calls"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"instructions": "x" * 2001}, "instructions"),
        ({"top_p": 0}, "top_p"),
        ({"previous_response_id": "resp/1"}, "previous_response_id"),
        ({"seed": 1}, "seed"),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_its_field(fields, param):
    assert refusal(**fields).param == param


def test_a_text_format_is_held_by_the_grammar_and_echoed():
    given = parse(text=JSON_SCHEMA)
    grammar = given.reply_grammar()
    assert grammar.param == "text.format.schema" and grammar_problem(grammar.text) is None
    assert given.generation_params(Settings().generation_defaults()).json_schema == '{"type":"object",' + (
        '"properties":{"ok":{"type":"boolean"}},"required":["ok"]}'
    )
    assert given.text_format.described() == {
        "type": "json_schema",
        "name": "verdict",
        "schema": SCHEMA,
        "description": None,
        "strict": True,
    }
    assert parse(text={"format": {"type": "json_object"}}).reply_grammar().param == "text.format"
    with_tools = parse(text=JSON_SCHEMA, tools=[{"type": "function", "name": "f"}])
    assert with_tools.reply_grammar().param == "tools", "the calls' grammar holds the answer's schema too"


@pytest.mark.parametrize(
    "text_format, param",
    [
        ({"type": "json_schema", "schema": SCHEMA}, "text.format.name"),
        ({"type": "json_schema", "name": "v"}, "text.format.schema"),
        ({"type": "text", "name": "v"}, "text.format.type"),
        ({"type": "json_schema", "name": "v", "schema": {"type": "object", "unknownKeyword": {}}}, None),
        ({"type": "json_schema", "name": "v", "schema": []}, "text.format.schema"),
        ({"type": "json_schema", "name": "v", "schema": SCHEMA, "json_schema": {}}, "text.format.json_schema"),
    ],
)
def test_a_bad_text_format_is_refused_naming_its_field(text_format, param):
    if param is None:  # a keyword the grammar ignores is accepted, as response_format takes it
        assert parse(text={"format": text_format}).reply_grammar() is not None
        return
    assert refusal(text={"format": text_format}).param == param


def test_the_conversation_continues_the_earlier_one_and_the_instructions_lead_the_prompt_alone():
    earlier = [Message("user", "hello"), Message("assistant", "hi")]
    given = parse(input="again", instructions="Be brief.")
    conversation = given.continued(earlier)
    assert conversation == [*earlier, Message("user", "again")]
    assert given.prompt_messages(conversation) == [Message("system", "Be brief."), *conversation]
    assert parse().prompt_messages(conversation) == conversation
    output = {"type": "function_call_output", "call_id": "c", "output": "3"}
    assert parse(input=[output]).continued(earlier)[-1] == Message("tool", "3", tool_call_id="c")
    with pytest.raises(InvalidRequest) as caught:
        parse(input=[output]).continued([])
    assert caught.value.param == "input" and "user message" in caught.value.message


@pytest.mark.parametrize(
    "effort, thinking",
    [(None, None), ("none", False), ("minimal", False), ("low", True), ("high", True), ("xhigh", True)],
)
def test_reasoning_effort_says_whether_a_thinking_model_thinks_as_on_chat_completions(effort, thinking):
    given = parse(reasoning={"effort": effort} if effort else {"summary": "auto"})
    assert given.thinking_wanted() is thinking
    assert given.generation_params(Settings().generation_defaults()).thinking is thinking


def test_sampling_follows_the_temperature_as_openai_clients_expect():
    defaults = replace(Settings().generation_defaults(), do_sample=False)
    assert parse(temperature=0.9).generation_params(defaults).do_sample
    assert not parse(temperature=0).generation_params(defaults).do_sample
