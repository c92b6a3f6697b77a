"""A conversation as Anthropic's API sends it: blocks become the engine's messages, and what cannot is named."""

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.types import Message, ToolCall
from palaver.web.anthropic.content import conversation_messages
from palaver.web.anthropic.request_schemas import MessagesInput

USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "3 degrees"}


def conversation(*turns, **fields):
    body = {"model": "m", "messages": list(turns), **fields}
    return MessagesInput.parse(body, {"settings": Settings()})


def engine_messages(*turns, **fields):
    parsed = conversation(*turns, **fields)
    return [message for turn in parsed.messages for message in turn.to_messages()]


def test_strings_and_text_blocks_are_the_same_text():
    as_string = engine_messages({"role": "user", "content": "hello there"})
    as_blocks = engine_messages(
        {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]}
    )
    assert as_string == as_blocks == [Message("user", "hello there")]


def test_tool_uses_and_results_become_calls_and_tool_messages():
    parsed = engine_messages(
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, USE]},
        {"role": "user", "content": [RESULT, {"type": "text", "text": "and tomorrow?"}]},
    )
    assert parsed[1] == Message(
        "assistant", "Let me look.", tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Oslo"}'),)
    )
    assert parsed[2:] == [Message("tool", "3 degrees", tool_call_id="toolu_1"), Message("user", "and tomorrow?")]


def test_a_failed_result_is_marked_and_a_result_of_text_blocks_is_joined():
    failed = {
        **RESULT,
        "content": [{"type": "text", "text": "no "}, {"type": "text", "text": "such city"}],
        "is_error": True,
    }
    parsed = engine_messages(
        {"role": "user", "content": "x"}, {"role": "assistant", "content": [USE]}, {"role": "user", "content": [failed]}
    )
    assert parsed[-1] == Message("tool", "Error: no such city", tool_call_id="toolu_1")


def test_cache_control_is_accepted_everywhere_it_may_be_sent():
    ephemeral = {"type": "ephemeral"}
    parsed = conversation(
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": ephemeral}]},
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    )
    assert parsed.system[0].text == "be brief"


@pytest.mark.parametrize(
    "turns, param, words",
    [
        ([{"role": "user", "content": [{"type": "image", "source": {}}]}], "messages[0].content[0]", "image blocks"),
        ([{"role": "user", "content": [{"type": "document", "source": {}}]}], "messages[0].content[0]", "document"),
        (
            [{"role": "user", "content": [{"type": "thinking", "thinking": "hm"}]}],
            "messages[0].content",
            "only assistant messages may hold thinking blocks",
        ),
        ([{"role": "user", "content": [{"type": "web_search_tool_result"}]}], "messages[0].content[0]", "web_search"),
        (
            [{"role": "user", "content": [{**RESULT, "content": [{"type": "image", "source": {}}]}]}],
            "messages[0].content[0].content[0]",
            "image blocks",
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text", "needs 'text'"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "x", "id": "a"}]}],
            "messages[0].content[0].id",
            "takes only",
        ),
        ([{"role": "robot", "content": "x"}], "messages[0].role", "one of user, assistant"),
        ([{"role": "user", "content": [USE]}], "messages[0].content", "only assistant messages may hold tool_use"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "I"}], "messages", "prefill"),
        ([{"role": "user", "content": " "}], "messages", "holds text or a tool_result"),
        ([], "messages", "a list of 1 to"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "x", "citations": [{"x": 1}]}]}],
            "messages[0].content[0].citations",
            "citations",
        ),
    ],
)
def test_what_a_text_model_cannot_read_is_refused_by_name(turns, param, words):
    with pytest.raises(InvalidRequest) as caught:
        conversation(*turns)
    assert caught.value.param == param and words in caught.value.message, caught.value.message


def test_a_message_past_the_length_limit_is_refused():
    with pytest.raises(InvalidRequest) as caught:
        MessagesInput.parse(
            {"model": "m", "messages": [{"role": "user", "content": "x" * 11}]},
            {"settings": Settings(max_message_chars=10)},
        )
    assert caught.value.param == "messages[0].content" and "at most 10 characters" in caught.value.message


def test_the_system_prompt_comes_first_as_a_system_message():
    parsed = conversation({"role": "user", "content": "hi"}, system="be brief")
    assert conversation_messages(parsed.system, parsed.messages) == [
        Message("system", "be brief"),
        Message("user", "hi"),
    ]


def test_an_earlier_replys_thinking_is_accepted_and_left_out_of_the_prompt():
    thinking = {"type": "thinking", "thinking": "the user greets me", "signature": "abc"}
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    parsed = engine_messages(
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [thinking, redacted, {"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": "again"},
    )
    assert parsed[1] == Message("assistant", "Hello!"), "as thinking models' templates leave old reasoning out"
