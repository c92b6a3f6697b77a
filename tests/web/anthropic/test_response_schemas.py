"""Anthropic's response objects: a reply's blocks, why it ended, its usage, and errors typed by their status."""

import pytest

from palaver.core.errors import (
    ConversationBusy,
    GenerationFailed,
    GenerationTimeout,
    InvalidRequest,
    ModelNotReady,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from palaver.core.types import Reply, ToolCall, Usage
from palaver.web.anthropic.response_schemas import ErrorResponse, MessagesResponse, stop_reason, tool_input

USAGE = Usage(7, 3)


def test_a_reply_becomes_a_message_of_blocks_with_usage():
    call = ToolCall("call_abc", "get_time", "{}")
    message = MessagesResponse.of("m", Reply("Let me look.", USAGE, 0, "tool_calls", tool_calls=(call,))).model_dump()
    assert message["id"].startswith("msg_") and (message["type"], message["role"]) == ("message", "assistant")
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_abc", "name": "get_time", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use" and message["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_a_thinking_models_reasoning_comes_first_in_a_signed_thinking_block():
    reply = Reply("42", USAGE, 0, "stop", reasoning="six times seven")
    first, again = (MessagesResponse.of("m", reply).model_dump()["content"] for _ in range(2))
    assert [block["type"] for block in first] == ["thinking", "text"] and first[0]["thinking"] == "six times seven"
    assert first[0]["signature"] and first[0]["signature"] == again[0]["signature"], "a stable signature"
    cut = MessagesResponse.of("m", Reply("", USAGE, 0, "length", reasoning="still thinking")).model_dump()
    assert [block["type"] for block in cut["content"]] == ["thinking"] and cut["stop_reason"] == "max_tokens"


def test_an_empty_reply_has_no_blocks():
    assert MessagesResponse.of("m", Reply("", USAGE, 0, "stop")).content == []


@pytest.mark.parametrize(
    "reply, reason",
    [
        (Reply("x", USAGE, 0, "stop"), "end_turn"),
        (Reply("x", USAGE, 0, "stop", stop_sequence="##"), "stop_sequence"),
        (Reply("x", USAGE, 0, "length"), "max_tokens"),
        (Reply("", USAGE, 0, "tool_calls"), "tool_use"),
    ],
)
def test_stop_reasons_are_anthropics(reply, reason):
    assert stop_reason(reply) == reason
    assert MessagesResponse.of("m", reply).stop_sequence == reply.stop_sequence


def test_a_call_cut_off_keeps_the_input_written_so_far():
    assert tool_input('{"city": "Oslo", "unit": "c') == {"city": "Oslo"}
    assert tool_input('{"city": "Oslo"}') == {"city": "Oslo"} and tool_input("") == {} and tool_input("[1]") == {}


@pytest.mark.parametrize(
    "error, kind",
    [
        (InvalidRequest("x"), "invalid_request_error"),
        (Unauthorized("x"), "authentication_error"),
        (NotFound("x"), "not_found_error"),
        (PayloadTooLarge("x"), "request_too_large"),
        (ModelNotReady("x"), "overloaded_error"),
        (GenerationTimeout("x"), "timeout_error"),
        (ConversationBusy("x"), "invalid_request_error"),
        (GenerationFailed("x"), "api_error"),
    ],
)
def test_errors_take_anthropics_type_for_their_status(error, kind):
    assert ErrorResponse.of(error).model_dump() == {"type": "error", "error": {"type": kind, "message": "x"}}
