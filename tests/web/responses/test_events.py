"""A streamed response as numbered, named events: items opened and closed in turn, kept before the last event."""

import json

from commons import Settings
from palaver.core.errors import GenerationFailed
from palaver.core.types import PromptInfo, ReasoningDelta, Reply, ToolCall, ToolCallDelta, Usage
from palaver.web.responses.events import response_events
from palaver.web.responses.request_schemas import ResponsesRequest
from palaver.web.responses.response_schemas import ResponseObject


def parsed(frames) -> list[dict]:
    """Return each framed event's data, checking that the frame is named by its type and numbered in turn."""
    events = []
    for number, frame in enumerate(frames):
        name, data = frame.removesuffix("\n\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}" and payload["sequence_number"] == number
        events.append(payload)
    return events


def stream(*items):
    yield PromptInfo(5, 0)
    yield from items


def started() -> ResponseObject:
    given = ResponsesRequest.parse({"model": "m", "input": "hi"}, {"settings": Settings()})
    return ResponseObject.started(given, "chat-llama", Settings().generation_defaults())


def test_text_streams_as_one_message_with_its_part_and_the_kept_response_comes_last():
    kept = []
    reply = Reply("Hello there", Usage(5, 2), 0, "stop")
    events = parsed(response_events(stream("Hello", " there", reply), started(), "msg_1", kept.append))
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[2]["item"] == {
        "id": "msg_1",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert events[4] == {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hello",
        "logprobs": [],
        "sequence_number": 4,
    }
    assert events[6]["text"] == events[7]["part"]["text"] == "Hello there"
    assert events[8]["item"] == events[9]["response"]["output"][0] and events[8]["item"]["status"] == "completed"
    assert [response.model_dump() for response in kept] == [events[9]["response"]]


def test_reasoning_streams_as_its_own_item_before_the_message():
    kept = []
    reply = Reply("the answer", Usage(5, 6, 3), 0, "stop", reasoning="some thought")
    items = stream(ReasoningDelta("some"), ReasoningDelta(" thought"), "the answer", reply)
    events = parsed(response_events(items, started(), "msg_1", kept.append))
    assert [event["type"] for event in events][2:10] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert events[2]["item"] == {
        "id": "rs_1",
        "type": "reasoning",
        "status": "in_progress",
        "summary": [],
        "content": [],
    }
    assert events[3]["part"] == {"type": "reasoning_text", "text": ""}
    assert events[4] == {
        "type": "response.reasoning_text.delta",
        "item_id": "rs_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "some",
        "sequence_number": 4,
    }
    assert events[6]["text"] == events[7]["part"]["text"] == "some thought"
    assert events[9]["output_index"] == 1 and events[9]["item"]["id"] == "msg_1"
    final = events[-1]["response"]
    assert final["output"][0] == events[8]["item"] and events[8]["item"]["status"] == "completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"] and kept


def test_calls_stream_as_function_call_items_and_a_cut_off_one_is_incomplete():
    calls = [
        ToolCallDelta(0, "call_a", "get_time", ""),
        ToolCallDelta(0, None, None, '{"zone": '),
        ToolCallDelta(0, None, None, '"utc"}'),
        ToolCallDelta(1, "call_b", "get_time", '{"zo'),
    ]
    whole = ToolCall("call_a", "get_time", '{"zone": "utc"}')
    reply = Reply("", Usage(5, 9), 0, "length", tool_calls=(whole, ToolCall("call_b", "get_time", '{"zo')))
    events = parsed(response_events(stream(*calls, reply), started(), "msg_1", lambda response: None))
    names = [event["type"] for event in events]
    assert names[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert events[2]["item"] == {
        "id": "fc_a",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_a",
        "name": "get_time",
        "arguments": "",
    }
    assert events[5]["arguments"] == '{"zone": "utc"}' and events[5]["item_id"] == "fc_a"
    assert [event["item"]["status"] for event in (events[6], events[10])] == ["completed", "incomplete"]
    final = events[-1]["response"]
    assert final["output"] == [events[6]["item"], events[10]["item"]]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}


def failing():
    yield PromptInfo(5, 0)
    yield "Hel"
    raise GenerationFailed()


def test_a_failure_mid_stream_is_an_error_event_then_response_failed_and_nothing_is_kept():
    kept = []
    events = parsed(response_events(failing(), started(), "msg_1", kept.append))
    assert [event["type"] for event in events][-3:] == ["response.output_text.delta", "error", "response.failed"]
    assert events[-2]["code"] == "server_error" and events[-2]["message"]
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"] == "server_error"
    assert kept == []
