"""Tools: OpenAI's tool objects checked at the boundary, and the grammar each tool choice holds a reply to."""

import json

import pytest
from llguidance import LLMatcher, LLTokenizer

from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import SCHEMA_PARAM, grammar_problem, schema_grammar
from palaver.core.tools import FunctionTool, ToolUse, grammar_for, lark_grammar, unique_names
from palaver.core.validation import RequestModel

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def use(*tools, choice=None, parallel=True):
    return ToolUse.of([FunctionTool.model_validate(tool) for tool in tools], choice, parallel)


def accepts(grammar: str, text: str) -> bool:
    """Tell whether the grammar accepts text whole, fed byte by byte: no model's tokenizer is needed."""
    encoded = list(text.encode())
    return byte_matcher(grammar).try_consume_tokens(encoded) == len(encoded)


def byte_matcher(grammar: str) -> LLMatcher:
    """Return a matcher over a vocabulary of one token per byte (byte fallback), and an end token."""
    vocab = {f"<0x{byte:02X}>": byte for byte in range(256)} | {"</s>": 256}
    end = {"id": 256, "content": "</s>", "special": True, "single_word": False, "lstrip": False}
    tokenizer = {
        "version": "1.0",
        "added_tokens": [{**end, "rstrip": False, "normalized": False}],
        "model": {"type": "BPE", "vocab": vocab, "merges": [], "byte_fallback": True},
        "decoder": {"type": "ByteFallback"},
    }
    matcher = LLMatcher(LLTokenizer(json.dumps(tokenizer), n_vocab=257, eos_token=256), lark_grammar(grammar))
    assert not matcher.is_error(), matcher.get_error()
    return matcher


def call(name, arguments):
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def test_required_allows_only_well_formed_calls_of_the_tools():
    grammar = use(WEATHER, CLOCK, choice="required").grammar()
    assert grammar_problem(lark_grammar(grammar)) is None
    assert accepts(grammar, call("get_weather", '{"city": "Paris", "unit": "c"}'))
    assert accepts(grammar, call("get_time", "{}") + "\n" + call("get_time", "{}"))
    assert not accepts(grammar, "It is sunny.")
    assert not accepts(grammar, call("get_weather", '{"city": "Paris"}')), "a required argument is missing"
    assert not accepts(grammar, call("get_weather", '{"city":"Paris","unit":"c"}')), "the separators are fixed"
    assert not accepts(grammar, call("launch", "{}"))


def test_a_named_choice_and_no_parallel_calls_allow_one_call_of_that_function():
    named = use(WEATHER, CLOCK, choice=json_choice("get_time")).grammar()
    assert accepts(named, call("get_time", "{}"))
    assert not accepts(named, call("get_weather", '{"city": "x", "unit": "f"}'))
    assert not accepts(named, call("get_time", "{}") + "\n" + call("get_time", "{}"))
    single = use(WEATHER, CLOCK, choice="required", parallel=False).grammar()
    assert not accepts(single, call("get_time", "{}") + "\n" + call("get_time", "{}"))


def json_choice(name):
    from palaver.core.tools import NamedToolChoice

    return NamedToolChoice.model_validate({"type": "function", "function": {"name": name}})


def test_auto_allows_an_answer_or_calls_but_never_a_broken_call():
    grammar = use(WEATHER, CLOCK).grammar()
    assert accepts(grammar, "It is sunny in Paris.")
    assert accepts(grammar, call("get_time", "{}"))
    assert not accepts(grammar, "Let me check. <tool_call>\n{}"), "text never holds a call's opening tag"
    assert not accepts(grammar, '<tool_call>\n{"name": "get_time"}\n</tool_call>')
    with_schema = use(CLOCK).grammar('{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}')
    assert accepts(with_schema, '{"a":3}') and not accepts(with_schema, "free text")


def test_none_or_no_tools_leave_the_reply_free():
    assert use(WEATHER, choice="none").grammar() is None
    assert use(WEATHER, choice="none").prompt_tools() is None
    assert use(WEATHER).prompt_tools()[0]["function"]["parameters"]["required"] == ["city", "unit"]


def test_parameters_default_to_no_arguments_and_must_describe_an_object():
    assert json.loads(use(CLOCK).functions[0].parameters) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    with pytest.raises(Exception, match="type object"):
        FunctionTool.model_validate({"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}})


class Tools(RequestModel):
    tools: list[FunctionTool]

    @classmethod
    def check(cls, tools):
        return unique_names(cls.parse({"tools": tools}).tools)


@pytest.mark.parametrize(
    "tools, param, words",
    [
        ([CLOCK, CLOCK], None, "'get_time' is named twice"),
        ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name", "must match the pattern"),
        ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0].type", "function"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": {"not": {}}}}}}],
            "tools[0].function.parameters",
            "'not' at #/properties/a",
        ),
    ],
)
def test_bad_tools_name_the_field(tools, param, words):
    with pytest.raises((InvalidRequest, ValueError)) as caught:
        Tools.check(tools)
    if isinstance(caught.value, InvalidRequest):
        assert caught.value.param == param and words in caught.value.message, caught.value.message
    else:
        assert words in str(caught.value)


def test_a_function_named_like_a_mode_is_still_the_one_named():
    called_none = {"type": "function", "function": {"name": "none"}}
    grammar = use(called_none, CLOCK, choice=json_choice("none")).grammar()
    assert grammar is not None and accepts(grammar, call("none", "{}")) and not accepts(grammar, call("get_time", "{}"))


def test_the_grammar_a_reply_must_follow_is_its_calls_then_its_schema_then_none():
    schema = '{"type":"object"}'
    calls = grammar_for(schema, use(CLOCK, choice="auto"))
    assert calls is not None and calls.param == "tools"
    assert calls.text == lark_grammar(use(CLOCK, choice="auto").grammar(schema)), "the answer's schema is in the calls'"
    assert grammar_for(schema, use(CLOCK, choice="none")) == grammar_for(schema, None)
    assert grammar_for(schema, None).text == schema_grammar(schema) and grammar_for(schema, None).param == SCHEMA_PARAM
    assert grammar_for(None, use(CLOCK, choice="none")) is None and grammar_for(None, None) is None
