"""The Responses API's tools: flat function tools, the tool choice, and every hosted tool refused by its name."""

import json

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.web.responses.request_schemas import ResponsesRequest
from palaver.web.responses.tools import HOSTED_TOOLS

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
CLOCK = {"type": "function", "name": "get_time"}


def parse(**fields):
    return ResponsesRequest.parse({"model": "m", "input": "hi", **fields}, {"settings": Settings()})


def refusal(**fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    return caught.value


def test_flat_function_tools_become_the_engines_functions_and_choices():
    given = parse(tools=[WEATHER, CLOCK], tool_choice={"type": "function", "name": "get_time"})
    use = given.tool_use()
    assert [function.name for function in use.functions] == ["get_weather", "get_time"]
    assert json.loads(use.functions[1].parameters)["properties"] == {}, "no parameters: an empty object"
    assert (use.choice, use.named, use.parallel) == ("named", "get_time", True)
    assert given.reply_grammar().param == "tools" and given.tools[0].described()["strict"] is True
    for mode in ("auto", "required", "none"):
        assert parse(tools=[WEATHER], tool_choice=mode, parallel_tool_calls=False).tool_use().choice == mode
    assert not parse(tools=[WEATHER], parallel_tool_calls=False).tool_use().parallel
    assert parse(tools=[]).tool_use() is None and parse(tools=[WEATHER], tool_choice="none").reply_grammar() is None


@pytest.mark.parametrize("kind", HOSTED_TOOLS)
def test_every_hosted_tool_is_refused_by_name_at_its_type(kind):
    error = refusal(tools=[WEATHER, {"type": kind}])
    assert error.param == "tools[1].type" and f"'{kind}'" in error.message and error.code == "unsupported_parameter"


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"tools": [{**WEATHER, "type": "brand_new"}]}, "tools[0].type", "'brand_new' are not supported"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "'get_weather' is named twice"),
        ({"tools": [{**WEATHER, "parameters": {"type": "array"}}]}, "tools[0].parameters", "of type object"),
        ({"tools": [{**WEATHER, "function": {}}]}, "tools[0].function", "unknown field"),
        ({"tool_choice": "required"}, "tool_choice", "needs at least one function"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "lacks"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice", "allowed_tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice", '"type": "function"'),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "none, auto, required"),
    ],
)
def test_a_bad_tool_or_choice_is_refused_naming_its_field(fields, param, words):
    error = refusal(**fields)
    assert error.param == param and words in error.message, (error.param, error.message)
