"""OpenAI's response objects: completions, chunks, and usage only where asked for."""

from palaver.core.types import Reply, Usage
from palaver.web.openai.response_schemas import ChatCompletion, ChatCompletionChunk, ChunkChoice, Delta


def test_chunks_carry_usage_only_when_asked():
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChunkChoice(delta=Delta(content="hi"))])
    assert "usage" not in chunk.as_event(include_usage=False)
    assert chunk.as_event(include_usage=True)["usage"] is None
    assert chunk.as_event(False)["choices"][0] == {
        "index": 0,
        "delta": {"role": None, "content": "hi"},
        "logprobs": None,
        "finish_reason": None,
    }


def test_reasoning_and_its_tokens_appear_only_for_a_thinking_models_reply():
    plain = ChatCompletion.of("m", [Reply("hi", Usage(3, 2), 0, "stop")]).model_dump()
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert "completion_tokens_details" not in plain["usage"]
    thought = ChatCompletion.of("m", [Reply("hi", Usage(3, 5, 3), 0, "stop", reasoning="hm")] * 2).model_dump()
    assert thought["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi",
        "reasoning_content": "hm",
        "reasoning": "hm",
    }
    assert thought["usage"]["completion_tokens"] == 10 and thought["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 6
    }
    assert Delta.thought("hm").model_dump() == {
        "role": None,
        "content": None,
        "reasoning_content": "hm",
        "reasoning": "hm",
    }
