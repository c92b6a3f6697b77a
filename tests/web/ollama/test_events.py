"""A streamed reply framed as Ollama frames one: a JSON object a line, the last done, and a last error line."""

import json

import ollama

from palaver.core.errors import GenerationTimeout
from palaver.core.types import ReasoningDelta, Reply, ToolCall, ToolCallDelta, Usage
from palaver.web.ollama.events import chat_lines, generate_lines
from palaver.web.ollama.response_schemas import Clock


def stream(*items):
    yield from items


def read(lines) -> list[dict]:
    """Return each line's object, checking that each is one line of JSON."""
    frames = list(lines)
    assert all(frame.endswith("\n") and frame.count("\n") == 1 for frame in frames)
    return [json.loads(frame) for frame in frames]


def test_a_chats_text_comes_in_parts_its_calls_whole_and_then_its_end():
    call = ToolCall("call_a", "get_time", '{"zone": "utc"}')
    deltas = [ToolCallDelta(0, "call_a", "get_time", ""), ToolCallDelta(0, None, None, '{"zone": "utc"}')]
    reply = Reply("Let me look.", Usage(5, 9), 0, "tool_calls", tool_calls=(call,))
    ended = []
    parts = read(
        chat_lines(stream("Let me ", "look.", *deltas, reply), "m", Clock(loading=False), lambda: ended.append(1))
    )
    assert [part["message"].get("content") for part in parts] == ["Let me ", "look.", "", ""]
    assert [part["done"] for part in parts] == [False, False, False, True] and ended == [1]
    assert parts[2]["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"name": "get_time", "arguments": {"zone": "utc"}}}
    ]
    last = ollama.ChatResponse(**parts[-1])
    assert last.done_reason == "stop" and last.eval_count == 9 and last.prompt_eval_count == 5
    assert last.total_duration >= last.eval_duration >= 0


def test_a_generations_text_comes_in_parts_then_its_end():
    reply = Reply("Hello", Usage(2, 2), 0, "length")
    parts = read(generate_lines(stream("Hel", "lo", reply), "m", Clock(loading=True), lambda: None))
    assert [part.get("response") for part in parts] == ["Hel", "lo", ""]
    assert parts[-1]["done_reason"] == "length" and parts[-1]["load_duration"] >= 0 and "message" not in parts[-1]


def test_a_thinking_models_reasoning_comes_first_in_thinking_parts_with_no_content():
    reply = Reply("the answer", Usage(5, 6, 3), 0, "stop", reasoning="some thought")
    items = [ReasoningDelta("some"), ReasoningDelta(" thought"), "the answer", reply]
    parts = read(chat_lines(stream(*items), "m", Clock(loading=False), lambda: None))
    assert [part["message"] for part in parts[:3]] == [
        {"role": "assistant", "content": "", "thinking": "some"},
        {"role": "assistant", "content": "", "thinking": " thought"},
        {"role": "assistant", "content": "the answer"},
    ]
    assert parts[-1]["done"] and "thinking" not in parts[-1]["message"]
    generated = read(generate_lines(stream(*items), "m", Clock(loading=False), lambda: None))
    assert [(part["response"], part.get("thinking")) for part in generated[:3]] == [
        ("", "some"),
        ("", " thought"),
        ("the answer", None),
    ]


def test_an_error_after_the_stream_began_is_a_last_error_line():
    def failing():
        yield "Hel"
        raise GenerationTimeout("the reply took too long")

    ended = []
    parts = read(generate_lines(failing(), "m", Clock(loading=False), lambda: ended.append(1)))
    assert parts[-1] == {"error": "the reply took too long"} and parts[0]["response"] == "Hel"
    assert ended == [], "nothing runs after a failed reply"
