"""A streamed reply framed as Anthropic's named events: blocks opened and closed in turn, and a last error event."""

import json

from palaver.core.types import PromptInfo, Reply, ToolCallDelta, Usage
from palaver.web.anthropic.events import message_events


def parsed(frames) -> list[tuple[str, dict]]:
    """Return each framed event's name and data, checking that its data names it too."""
    events = []
    for frame in frames:
        name, data = frame.removesuffix("\n\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.append((payload["type"], payload))
    return events


def stream(*items):
    yield PromptInfo(5, 0)
    yield from items


def test_text_then_calls_are_blocks_in_turn_each_with_its_deltas():
    calls = [
        ToolCallDelta(0, "call_a", "get_time", ""),
        ToolCallDelta(0, None, None, '{"zone": '),
        ToolCallDelta(0, None, None, '"utc"}'),
    ]
    reply = Reply("", Usage(5, 9), 0, "tool_calls")
    events = parsed(message_events(stream("Let me ", "look.", *calls, reply), "m", 5))
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (
        start["usage"] == {"input_tokens": 5, "output_tokens": 0}
        and start["content"] == []
        and start["stop_reason"] is None
    )
    assert events[6][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_time", "input": {}},
    }
    arguments = "".join(data["delta"]["partial_json"] for name, data in events[7:9])
    assert json.loads(arguments) == {"zone": "utc"} and events[3][1]["delta"] == {
        "type": "text_delta",
        "text": "Let me ",
    }
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": 9}


def test_a_reply_ending_at_a_stop_sequence_names_it():
    events = parsed(message_events(stream("hi", Reply("hi", Usage(5, 2), 0, "stop", stop_sequence="##")), "m", 5))
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "##"}


def test_a_failure_mid_stream_is_a_last_error_event_that_tells_nothing_inside(caplog):
    def failing():
        yield PromptInfo(5, 0)
        yield "half a "
        raise RuntimeError("exploded inside the model")

    events = parsed(message_events(failing(), "m", 5))
    assert [name for name, _ in events][-2:] == ["content_block_delta", "error"]
    error = events[-1][1]["error"]
    assert error["type"] == "api_error" and "exploded" not in error["message"]
    assert "exploded inside the model" in caplog.text


def test_closing_the_events_closes_the_generation():
    closed = []

    def generation():
        try:
            yield PromptInfo(5, 0)
            yield "a"
            yield "b"
        finally:
            closed.append(True)

    events = message_events(generation(), "m", 5)
    for frame in events:
        if "text_delta" in frame:
            break
    events.close()
    assert closed == [True]
