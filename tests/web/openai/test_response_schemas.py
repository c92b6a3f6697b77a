"""OpenAI's response objects: completions, chunks, and usage only where asked for."""

from palaver.web.openai.response_schemas import ChatCompletionChunk, ChunkChoice, Delta


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
