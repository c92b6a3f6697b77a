"""The upstream's side of the OpenAI API: tools sent as OpenAI's fields, and chunks read back into Palaver's events."""

from dataclasses import replace

import openai
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from palaver.backends.openai_wire import (
    pieces,
    sampling_fields,
    thinking_fields,
    tool_fields,
    translate,
    upstream_logprobs,
)
from palaver.core.errors import InvalidRequest, ModelNotReady
from palaver.core.parameters import GenerationParams
from palaver.core.requests import GenerationRequest
from palaver.core.tools import FunctionTool, NamedToolChoice, ToolUse
from palaver.core.types import TokenLogprob, ToolCallDelta, TopLogprob, Usage

PARAMS = GenerationParams(8, 0.0, 1.0, 0, 1.0, False, None)
CLOCK = FunctionTool.model_validate({"type": "function", "function": {"name": "get_time"}})


def test_tools_go_out_as_openais_fields():
    assert tool_fields(GenerationRequest(PARAMS, prompt="x")) == {}
    named = NamedToolChoice.model_validate({"type": "function", "function": {"name": "get_time"}})
    fields = tool_fields(GenerationRequest(PARAMS, messages=[], tools=ToolUse.of([CLOCK], named, False)))
    assert fields["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert fields["tools"][0]["function"]["name"] == "get_time" and fields["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in tool_fields(GenerationRequest(PARAMS, tools=ToolUse.of([CLOCK], None, True)))


def chunk(delta, finish=None, logprobs=None, usage=None):
    return ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
            "usage": usage,
        }
    )


def test_chat_chunks_become_text_calls_logprobs_and_usage():
    entry = {"token": "hi", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": [{"token": "hi", "logprob": -0.5}]}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{"}}
    read = list(
        pieces(
            [
                chunk({"content": "hi"}, logprobs={"content": [entry]}),
                chunk({"tool_calls": [call]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}, finish="tool_calls"),
            ]
        )
    )
    assert read[0].text == "hi"
    assert read[0].logprobs == [TokenLogprob("hi", (104, 105), -0.5, (TopLogprob("hi", (104, 105), -0.5),))]
    assert read[1].calls == [ToolCallDelta(0, "call_1", "get_time", "{")]
    assert read[2].calls == [ToolCallDelta(0, None, None, "}")] and read[2].finish_reason == "tool_calls"
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    final = ChatCompletionChunk.model_validate(
        {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [], "usage": usage}
    )
    assert [piece.usage for piece in pieces([final])] == [Usage(3, 2)]


def test_an_upstreams_reasoning_comes_apart_under_either_name_and_its_tokens_with_the_usage():
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": 6,
        "total_tokens": 9,
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    read = list(
        pieces(
            [
                chunk({"reasoning_content": "some", "reasoning": "some"}),  # llama-server's name and vLLM's, once
                chunk({"reasoning": " thought"}),
                chunk({"content": "the answer"}, finish="stop", usage=usage),
            ]
        )
    )
    assert [(piece.reasoning, piece.text) for piece in read] == [("some", ""), (" thought", ""), ("", "the answer")]
    assert read[-1].usage == Usage(3, 6, 3)


def test_a_thinking_choice_goes_out_as_reasoning_effort_and_the_templates_switch():
    assert thinking_fields(PARAMS) == {}, "the model's default: nothing is sent"
    on = thinking_fields(replace(PARAMS, thinking=True))
    assert on == {"reasoning_effort": "medium", "extra_body": {"chat_template_kwargs": {"enable_thinking": True}}}
    assert thinking_fields(replace(PARAMS, thinking=False)) == {
        "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}
    }, "no reasoning_effort none, which vLLM refuses"


def test_sampling_goes_out_held_to_the_upstreams_longest_reply():
    fields = sampling_fields(replace(PARAMS, max_new_tokens=64, stop=("###",), seed=3), "m", 16)
    assert (fields["model"], fields["max_tokens"], fields["temperature"], fields["top_p"]) == ("m", 16, 0.0, 1.0)
    assert fields["stop"] == ["###"] and fields["seed"] == 3 and fields["stream_options"] == {"include_usage": True}
    schema = sampling_fields(replace(PARAMS, json_schema='{"type":"object"}'), "m", None)["response_format"]
    assert schema["json_schema"]["schema"] == {"type": "object"} and schema["json_schema"]["strict"]


def test_text_completions_logprobs_come_back_as_entries():
    completion = Completion.model_validate(
        {
            "id": "c",
            "object": "text_completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "text": " a",
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": [" a"],
                        "token_logprobs": [-1.0],
                        "top_logprobs": [{" a": -1.0, " b": -2.0}],
                        "text_offset": [0],
                    },
                }
            ],
        }
    )
    (entry,) = upstream_logprobs(completion.choices[0].logprobs)
    assert entry == TokenLogprob(
        " a", (32, 97), -1.0, (TopLogprob(" a", (32, 97), -1.0), TopLogprob(" b", (32, 98), -2.0))
    )
    assert upstream_logprobs(None) == []


def test_failures_are_translated_without_their_details():
    assert isinstance(translate(RuntimeError("secret")), ModelNotReady)
    request = openai.APIConnectionError(request=None)  # type: ignore[arg-type]
    assert isinstance(translate(request), ModelNotReady)
    assert not isinstance(translate(RuntimeError("x")), InvalidRequest)
