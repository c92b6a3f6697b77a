"""The Responses API's objects: a response's settings echoed, its output and usage, and a page of input items."""

import pytest

from commons import Settings
from palaver.core.errors import GenerationFailed, InvalidRequest
from palaver.core.types import Reply, ToolCall, Usage
from palaver.web.responses.request_schemas import ResponsesRequest
from palaver.web.responses.response_schemas import InputItemList, InputItemsQuery, ResponseObject, RetrieveQuery

CALL = ToolCall("call_abc", "get_time", '{"zone": "utc"}')


def started(**fields) -> ResponseObject:
    given = ResponsesRequest.parse({"model": "m", "input": "hi", **fields}, {"settings": Settings()})
    return ResponseObject.started(given, "chat-llama", given.generation_params(Settings().generation_defaults()))


def test_a_started_response_echoes_what_it_runs_with():
    response = started(instructions="Be brief.", max_output_tokens=9, metadata={"a": "b"}, store=False)
    assert response.id.startswith("resp_") and response.status == "in_progress" and response.output == []
    assert (response.model, response.instructions, response.max_output_tokens) == ("chat-llama", "Be brief.", 9)
    assert (response.metadata, response.store, response.truncation) == ({"a": "b"}, False, "disabled")
    assert response.text == {"format": {"type": "text"}, "verbosity": "medium"} and response.usage is None
    assert started(temperature=0).temperature == 0.0 and started(temperature=0.5).temperature == 0.5
    assert started().tool_choice == "auto" and started().reasoning == {"effort": None, "summary": None}


def test_a_finished_response_holds_its_text_then_its_calls_and_openais_usage():
    reply = Reply("Let me look.", Usage(5, 9, 2), 0, "tool_calls", tool_calls=(CALL,))
    finished = started().finished(reply, "msg_1")
    assert finished.status == "completed" and finished.completed_at and finished.incomplete_details is None
    message, call = finished.model_dump()["output"]
    assert message == {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []}],
    }
    assert call == {
        "id": "fc_abc",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_abc",
        "name": "get_time",
        "arguments": '{"zone": "utc"}',
    }
    assert finished.model_dump()["usage"] == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 14,
    }


def test_a_reply_cut_off_is_incomplete_in_its_last_item_and_an_empty_one_has_no_message():
    cut = started().finished(Reply("abc", Usage(5, 8), 0, "length"), "msg_1")
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete" and cut.completed_at is None
    assert started().finished(Reply("", Usage(5, 1), 0, "stop"), "msg_1").output == []
    failed = started().failed(GenerationFailed())
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.error.message


def test_a_thinking_models_reasoning_is_an_item_before_its_message_and_alone_when_cut_off_while_thinking():
    finished = started().finished(Reply("the answer", Usage(5, 6, 3), 0, "stop", reasoning="some thought"), "msg_1")
    thought, message = finished.model_dump()["output"]
    assert thought == {
        "id": "rs_1",
        "type": "reasoning",
        "status": "completed",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "some thought"}],
    }
    assert message["id"] == "msg_1" and finished.usage.output_tokens_details.reasoning_tokens == 3
    cut = started().finished(Reply("", Usage(5, 8, 8), 0, "length", reasoning="still thinking"), "msg_1")
    assert [(item.type, item.status) for item in cut.output] == [("reasoning", "incomplete")]


ITEMS = [{"id": f"msg_{index}", "type": "message"} for index in range(5)]


def page(**query) -> InputItemList:
    return InputItemList.page(ITEMS, InputItemsQuery.parse(query, from_text=True))


def test_input_items_page_newest_first_or_in_order_after_an_item():
    whole = page()
    assert [item["id"] for item in whole.data] == ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"] and not whole.has_more
    first = page(limit="2", order="asc")
    assert [item["id"] for item in first.data] == ["msg_0", "msg_1"] and first.has_more
    assert (first.first_id, first.last_id) == ("msg_0", "msg_1")
    last = page(limit="2", order="asc", after="msg_3")
    assert [item["id"] for item in last.data] == ["msg_4"] and not last.has_more
    empty = page(after="msg_0")
    assert empty.data == [] and empty.first_id is None and not empty.has_more


@pytest.mark.parametrize(
    "query, param",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_9"}, "after"),
        ({"include": "x"}, "include"),
        ({"cursor": "x"}, "cursor"),
    ],
)
def test_a_bad_page_query_names_its_field(query, param):
    with pytest.raises(InvalidRequest) as caught:
        page(**query)
    assert caught.value.param == param


def test_a_stored_response_is_not_streamed_again():
    assert RetrieveQuery.parse({"stream": "false", "include_obfuscation": "true"}, from_text=True)
    for query in ({"stream": "true"}, {"starting_after": "3"}, {"include": "x"}):
        with pytest.raises(InvalidRequest) as caught:
            RetrieveQuery.parse(query, from_text=True)
        assert caught.value.param == next(iter(query))
