"""Ollama's reply objects: a chat's message and calls, a generation's text, their counts and durations, errors."""

from datetime import datetime

import ollama

from palaver.core.errors import NotFound
from palaver.core.types import PromptInfo, Reply, ToolCall, Usage
from palaver.web.ollama.response_schemas import (
    ChatResponse,
    Clock,
    ErrorResponse,
    GenerateResponse,
    created_at,
    done_reason,
)


def timed(loading: bool) -> Clock:
    """A clock whose request took 1 s to join, 2 s more to its first text, and 3 s more to its end."""
    clock = Clock(loading=loading, started=100.0)
    clock.joined, clock.first, clock.finished = 101.0, 103.0, 106.0
    return clock


def test_the_durations_are_the_stages_in_nanoseconds():
    reply = Reply("hi", Usage(5, 7), 0, "stop")
    loaded = timed(loading=False).metrics(reply)
    assert loaded == {
        "total_duration": 6_000_000_000,
        "load_duration": 0,
        "prompt_eval_count": 5,
        "prompt_eval_duration": 3_000_000_000,  # waiting for its place counts as reading the prompt
        "eval_count": 7,
        "eval_duration": 3_000_000_000,
    }
    loading = timed(loading=True).metrics(reply)
    assert (loading["load_duration"], loading["prompt_eval_duration"], loading["total_duration"]) == (
        1_000_000_000,
        2_000_000_000,
        6_000_000_000,
    )


def test_a_clock_notes_the_first_text_and_the_end():
    clock = Clock(loading=False)
    clock.saw(PromptInfo(3, 0))
    clock.saw("a")
    first = clock.first
    clock.saw("b")
    clock.saw(Reply("ab", Usage(3, 2), 0, "length"))
    assert clock.joined <= first == clock.first <= clock.finished


def test_a_reply_reads_as_ollamas_objects():
    call = ToolCall("call_1", "get_weather", '{"city": "Oslo", "unit": "c')  # cut off: what was written of it
    reply = Reply("", Usage(5, 9), 0, "length", tool_calls=(call,))
    whole = ChatResponse.of("m", reply, timed(loading=False)).as_json()
    assert whole["done"] is True and whole["done_reason"] == "length" and whole["eval_count"] == 9
    assert whole["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
    }
    assert ollama.ChatResponse(**whole).message.tool_calls[0].function.arguments == {"city": "Oslo"}
    part = GenerateResponse(model="m", response="hi").as_json()
    assert set(part) == {"model", "created_at", "response", "done"} and part["done"] is False
    ended = GenerateResponse.ended("m", Reply("hi", Usage(1, 1), 0, "stop"), timed(loading=False)).as_json()
    assert ended["response"] == "" and ended["done_reason"] == "stop" and ollama.GenerateResponse(**ended).done


def test_a_thinking_models_reasoning_is_its_thinking_apart_from_its_answer():
    reply = Reply("the answer", Usage(5, 6, 3), 0, "stop", reasoning="some thought")
    whole = ChatResponse.of("m", reply, timed(loading=False)).as_json()
    assert whole["message"] == {"role": "assistant", "content": "the answer", "thinking": "some thought"}
    assert ollama.ChatResponse(**whole).message.thinking == "some thought"
    generated = GenerateResponse.of("m", reply, timed(loading=False)).as_json()
    assert (generated["response"], generated["thinking"]) == ("the answer", "some thought")
    assert ollama.GenerateResponse(**generated).thinking == "some thought"
    plain = GenerateResponse.of("m", Reply("hi", Usage(1, 1), 0, "stop"), timed(loading=False)).as_json()
    assert "thinking" not in plain and "thinking" not in ChatResponse.of("m", reply, timed(False)).message.content


def test_why_a_reply_ended_in_ollamas_words():
    usage = Usage(1, 1)
    reasons = [done_reason(Reply("", usage, 0, reason)) for reason in ("stop", "length", "tool_calls", "cancelled")]
    assert reasons == ["stop", "length", "stop", "stop"]


def test_times_are_rfc_3339_in_utc_and_errors_are_one_message():
    assert created_at().endswith("Z") and datetime.fromisoformat(created_at()).utcoffset().total_seconds() == 0
    assert ErrorResponse.of(NotFound('model "x" not found')).model_dump() == {"error": 'model "x" not found'}
