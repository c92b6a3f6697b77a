"""Input items: strings and parts as the Responses API sends them, each kind with its fields, as Palaver's messages."""

import pytest

from commons import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.types import Message, ToolCall
from palaver.web.responses.items import call_item_id, conversation_of, reasoning_item_id
from palaver.web.responses.request_schemas import ResponsesRequest

CALL = {"type": "function_call", "call_id": "call_7", "name": "get_time", "arguments": "{}", "id": "fc_7"}


def items(value, **settings):
    return ResponsesRequest.parse({"model": "m", "input": value}, {"settings": Settings(**settings)}).input


def test_a_string_is_one_user_message_and_parts_are_joined():
    [item] = items("hello")
    assert (item.type, item.role, item.text()) == ("message", "user", "hello")
    [parts] = items(
        [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]
    )
    assert parts.text() == "ab" and parts.listed()["content"][1] == {"type": "input_text", "text": "b"}


def test_a_conversation_of_messages_calls_and_outputs_becomes_palavers_messages():
    given = items(
        [
            {"role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": "time?"},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed", "content": "Looking."},
            CALL,
            {"type": "function_call_output", "call_id": "call_7", "output": "noon"},
        ]
    )
    assert conversation_of(given) == [
        Message("system", "Be brief."),
        Message("user", "time?"),
        Message("assistant", "Looking.", tool_calls=(ToolCall("call_7", "get_time", "{}"),)),
        Message("tool", "noon", tool_call_id="call_7"),
    ]
    listed = [item.listed() for item in given]
    assert listed[2]["id"] == "msg_1" and listed[2]["content"] == [
        {"type": "output_text", "text": "Looking.", "annotations": []}
    ]
    assert listed[3] == {**CALL, "status": "completed"} and listed[4]["id"].startswith("fco_")
    assert call_item_id("call_7") == "fc_7"


def test_a_reply_replayed_as_openai_returns_it_is_accepted():
    replayed = {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}],
    }
    assert conversation_of(items([{"role": "user", "content": "hello"}, replayed]))[-1] == Message("assistant", "hi")


def test_a_reasoning_item_sent_back_is_accepted_listed_and_left_out_of_the_prompt():
    thought = {
        "type": "reasoning",
        "id": "rs_9",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "some thought"}],
        "status": "completed",
    }
    answer = {"type": "message", "role": "assistant", "id": "msg_9", "content": "the answer"}
    given = items([{"role": "user", "content": "hello"}, thought, answer, {"role": "user", "content": "and?"}])
    assert conversation_of(given) == [
        Message("user", "hello"),
        Message("assistant", "the answer"),
        Message("user", "and?"),
    ]
    assert given[1].listed() == thought
    summarised = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "e"}
    assert items([summarised, {"role": "user", "content": "hi"}])[0].listed()["id"].startswith("rs_")
    assert reasoning_item_id("msg_9") == "rs_9"


@pytest.mark.parametrize(
    "value, param, words",
    [
        ([], "input", "a list of 1 to"),
        (7, "input", "must be a string or a list"),
        ([{"role": "robot", "content": "hi"}], "input[0].role", "one of user, system, developer, assistant"),
        ([{"role": "user"}], "input[0].content", "needs 'content'"),
        ([{"role": "user", "content": "hi", "call_id": "c"}], "input[0].call_id", "takes only"),
        ([{"role": "user", "content": [{"type": "output_text", "text": "x"}]}], "input[0].content", "input_text"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0]", "file"),
        ([{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}], "input[0].content[0]", "refusal"),
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0]", "function tools only"),
        ([{"type": "item_reference", "id": "msg_1"}], "input[0]", "previous_response_id"),
        ([{"type": "reasoning", "id": "rs_1"}], "input[0].summary", "needs 'summary'"),
        ([{"type": "reasoning", "summary": [], "content": "hmm"}], "input[0].content", "reasoning_text parts only"),
        ([{"type": "reasoning", "summary": [], "role": "assistant"}], "input[0].role", "takes only"),
        (
            [{"role": "assistant", "content": [{"type": "reasoning_text", "text": "x"}]}],
            "input[0].content",
            "output_text parts only",
        ),
        ([{"type": "reasoning", "summary": [{"type": "output_text", "text": "x"}]}], "input[0].summary[0].type", ""),
        ([{**CALL, "name": "bad name"}], "input[0].name", "pattern"),
        ([{"role": "user", "content": "x" * 2001}], "input[0].content", "at most 2000 characters"),
        (
            [{"role": "user", "content": [{"type": "input_text", "text": "x", "annotations": [1]}]}],
            "input[0].content[0].annotations",
            "annotations",
        ),
    ],
)
def test_a_bad_item_is_refused_naming_its_field(value, param, words):
    with pytest.raises(InvalidRequest) as caught:
        items(value)
    assert words in caught.value.message and caught.value.param == param, caught.value.param


def test_an_input_is_bounded_by_the_message_count():
    with pytest.raises(InvalidRequest, match=r"a list of 1 to 2 items \(got 3\)"):
        items([{"role": "user", "content": "hi"}] * 3, max_messages=2)
