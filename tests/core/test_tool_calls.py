"""Calls in the Hermes format: written into prompts as text, and read back out of replies as they stream."""

import json

import pytest

from palaver.core.tool_calls import CallReader, read_calls, template_messages, text_messages
from palaver.core.types import Message, PromptInfo, ReasoningDelta, Reply, TokenLogprob, ToolCall, ToolCallDelta, Usage

TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
TWO_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "note": "a}\\n</tool_call>"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)


def read(pieces, finish="stop"):
    """Run text pieces and a Reply through read_calls; return the events and the Reply it ends with."""
    events = [PromptInfo(3, 0), *pieces, Reply("".join(pieces), Usage(3, len(pieces)), 0, finish)]
    out = list(read_calls(iter(events)))
    assert out[0] == PromptInfo(3, 0) and isinstance(out[-1], Reply)
    return out[1:-1], out[-1]


def assembled(events):
    """Reassemble calls from their deltas, as OpenAI's client does."""
    calls: dict[int, dict] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, {"id": event.id, "name": event.name, "arguments": ""})
            call["arguments"] += event.arguments
    return [calls[index] for index in sorted(calls)]


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_calls_stream_and_reassemble_whatever_the_pieces_sizes(size):
    pieces = [TWO_CALLS[i : i + size] for i in range(0, len(TWO_CALLS), size)]
    events, reply = read(pieces)
    calls = assembled(events)
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "note": "a}\n</tool_call>"}
    assert calls[1]["arguments"] == "{}" and all(c["id"].startswith("call_") for c in calls)
    assert not any(isinstance(e, str) for e in events), "no call text is passed on as an answer"
    assert reply.finish_reason == "tool_calls" and reply.text == ""
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        (c["id"], c["name"], c["arguments"]) for c in calls
    ]


@pytest.mark.parametrize("text", ["Hello there", "<tool", "<tool_cal x", "<", "a <tool_call> in the middle"])
def test_an_answer_passes_on_as_text(text):
    events, reply = read(list(text))
    assert "".join(e for e in events if isinstance(e, str)) == text
    assert reply.text == text and reply.tool_calls == () and reply.finish_reason == "stop"


def test_a_call_cut_off_by_max_tokens_keeps_what_was_written_and_says_length():
    cut = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    events, reply = read(list(cut), finish="length")
    assert reply.finish_reason == "length" and reply.text == ""
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_weather", '{"city": "Par')]
    assert assembled(events)[0]["arguments"] == '{"city": "Par'
    whole_then_closing = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_'
    assert read([whole_then_closing], finish="length")[1].tool_calls[0].arguments == "{}"
    unnamed = read(['<tool_call>\n{"na'], finish="length")[1]
    assert unnamed.tool_calls == () and unnamed.text == ""


def test_logprobs_pass_through_in_order():
    entry = TokenLogprob("a", (97,), -0.5)
    out = list(read_calls(iter([entry, "hi", Reply("hi", Usage(1, 1), 0, "stop")])))
    assert out[:2] == [entry, "hi"]


def test_the_generic_format_writes_tools_calls_and_results_as_text():
    call = ToolCall("call_1", "get_time", "{}")
    messages = [
        Message("system", "Be brief."),
        Message("user", "time?"),
        Message("assistant", "", tool_calls=(call, call)),
        Message("tool", "12:00", tool_call_id="call_1"),
        Message("tool", "12:01", tool_call_id="call_1"),
    ]
    shaped = text_messages(messages, TOOLS)
    assert [m.role for m in shaped] == ["system", "user", "assistant", "user"]
    assert shaped[0].content.startswith("Be brief.\n\n# Tools") and '"name": "get_time"' in shaped[0].content
    assert shaped[2].content.count('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>') == 2
    assert shaped[3].content == "<tool_response>\n12:00\n</tool_response>\n<tool_response>\n12:01\n</tool_response>"
    assert all(not m.tool_calls and m.tool_call_id is None for m in shaped)
    assert text_messages(messages[:2], None) == messages[:2]


def test_templates_get_a_calls_arguments_as_an_object():
    calls = (ToolCall("c", "f", '{"a": 1}'), ToolCall("d", "f", "not json"))
    shaped = template_messages([Message("assistant", "", tool_calls=calls), Message("tool", "ok", tool_call_id="c")])
    assert [c["function"]["arguments"] for c in shaped[0]["tool_calls"]] == [{"a": 1}, "not json"]
    assert shaped[1] == {"role": "tool", "content": "ok", "tool_call_id": "c"}


def test_a_reader_fed_nothing_has_nothing_to_say():
    reader = CallReader()
    assert list(reader.feed("")) == [] and list(reader.cut_off()) == []


def test_a_call_after_a_thinking_models_reasoning_is_read_and_the_reasoning_kept():
    call = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    thought = ReasoningDelta("which tool?")
    events = [PromptInfo(3, 0), thought, *call, Reply(call, Usage(3, 9, 2), 0, "stop", reasoning="which tool?")]
    out = list(read_calls(iter(events)))
    assert out[1] == thought, "the reasoning goes on as it is, never read for calls"
    reply = out[-1]
    assert reply.finish_reason == "tool_calls" and reply.text == "" and reply.reasoning == "which tool?"
    assert [c.name for c in reply.tool_calls] == ["get_time"] and reply.usage.reasoning_tokens == 2
