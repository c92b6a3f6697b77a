"""A conversation as Ollama sends it, read into Palaver's messages, and what it may not hold."""

import pytest

from palaver.core.config import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.types import Message, ToolCall
from palaver.web.ollama.request_schemas import ChatRequest

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def parsed(messages: list, **fields) -> ChatRequest:
    return ChatRequest.parse({"model": "m", "messages": messages, **fields}, {"settings": Settings(max_messages=4)})


def test_calls_and_their_results_become_palavers_messages():
    call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    named = {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": {}, "index": 0}}
    request = parsed(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [call, named], "thinking": "", "images": None},
            {"role": "tool", "content": "snow", "tool_name": "get_weather"},
        ],
        tools=[{"function": WEATHER}],  # type function is the default, as Ollama's server takes it
    )
    assert request.conversation() == [
        Message("system", "Be brief."),
        Message("user", "weather?"),
        Message(
            "assistant",
            "",
            tool_calls=(
                ToolCall("call_2_0", "get_weather", '{"city": "Oslo"}'),
                ToolCall("call_x", "get_weather", "{}"),
            ),
        ),
        Message("tool", "snow"),
    ]


def test_no_messages_asks_for_a_load():
    assert parsed([]).loads_only and not parsed([{"role": "user", "content": "hi"}]).loads_only


@pytest.mark.parametrize(
    "messages, param, words",
    [
        ([{"role": "user", "content": "hi", "images": ["aGk="]}], "messages[0].images", "images are not supported"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}], "messages", "must end with"),
        ([{"role": "system", "content": "hi"}, {"role": "tool", "content": "1"}], "messages", "non-empty user message"),
        ([{"role": "user", "content": "hi"}] * 5, "messages", "at most 4 messages"),
        ([{"role": "robot", "content": "hi"}], "messages[0].role", "one of system, user, assistant, tool"),
        ([{"role": "user", "content": "hi", "tool_name": "f"}], "messages[0].tool_name", "belongs on tool messages"),
        (
            [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]}],
            "messages[0].tool_calls",
            "",
        ),
    ],
)
def test_what_a_message_may_not_hold_is_named(messages, param, words):
    with pytest.raises(InvalidRequest) as caught:
        parsed(messages)
    assert caught.value.param == param and words in caught.value.message


def test_a_replayed_thought_is_accepted_on_an_assistants_message_and_left_out_of_the_prompt():
    request = parsed([{"role": "assistant", "content": "a", "thinking": "hmm"}, {"role": "user", "content": "hi"}])
    assert request.conversation() == [Message("assistant", "a"), Message("user", "hi")]
    with pytest.raises(InvalidRequest) as caught:
        parsed([{"role": "user", "content": "hi", "thinking": "hmm"}])
    assert caught.value.param == "messages[0].thinking" and "only assistant messages" in caught.value.message


def test_a_message_is_bounded_like_any_other():
    with pytest.raises(InvalidRequest) as caught:
        ChatRequest.parse(
            {"model": "m", "messages": [{"role": "user", "content": "x" * 11}]},
            {"settings": Settings(max_message_chars=10)},
        )
    assert caught.value.param == "messages[0].content" and "at most 10 characters" in caught.value.message
