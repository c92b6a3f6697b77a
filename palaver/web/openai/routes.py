"""The OpenAI-compatible API under /v1: chat completions, completions and models, streamed or not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing

from flask import Blueprint

from palaver.engine.engine import Engine, GenerationRequest
from palaver.errors import ModelNotReady, PalaverError
from palaver.types import PromptInfo, Reply, ReplyEvents, Usage, final
from palaver.web.boundary import (
    client_gone_probe,
    event_stream,
    get_engine,
    get_settings,
    guarded,
    json_error,
    read_json,
    sse_event,
    to_palaver_error,
)
from palaver.web.openai.protocol import (
    CompletionRequest,
    chat_chunk,
    chat_completion,
    finish_reason,
    new_id,
    text_choice,
    text_completion,
    usage_info,
)
from palaver.web.security import require_api_key

v1 = Blueprint("v1", __name__, url_prefix="/v1")
v1.before_request(require_api_key)
TRUNCATED_HEADER = "X-Palaver-Truncated-Turns"


@v1.post("/chat/completions")
def chat_completions():
    return serve_chat(CompletionRequest.parse_chat(read_json(), get_settings()), get_engine())


@v1.post("/completions")
def completions():
    return serve_text(CompletionRequest.parse_text(read_json(), get_settings()), get_engine())


@v1.get("/models")
def models():
    engine = get_engine()
    if not engine.wait_ready(get_settings().load_wait):
        raise ModelNotReady("the model is still loading; retry shortly", retry_after=5)
    limits = engine.model.family.describe()
    return {
        "object": "list",
        "data": [
            {
                "id": get_settings().model_name,
                "object": "model",
                "created": int(engine.model.loaded_at),
                "owned_by": "palaver",
                "family": limits["family"],
                "context_length": limits["context_tokens"],
                "max_input_tokens": limits["max_input_tokens"],
                "max_output_tokens": limits["max_reply_tokens"],
            }
        ],
    }


@v1.errorhandler(Exception)
def v1_error(exc: Exception):
    return json_error(to_palaver_error(exc))


def serve_chat(chat: CompletionRequest, engine: Engine):
    """Answer a chat completion, as one object or as a stream of chunks."""
    request = GenerationRequest(
        chat.params, messages=chat.messages, preset=engine.presets.get(chat.preset), client_gone=client_gone_probe()
    )
    items = engine.stream(request)
    info = next(items)  # errors found before any text (a prompt too long, a loading model) keep their status
    assert isinstance(info, PromptInfo)  # a stream starts with its prompt's size
    headers = {TRUNCATED_HEADER: str(info.truncated_turns)}
    if chat.stream:
        return event_stream(chat_events(items, chat), headers)
    reply = final(items, Reply)
    return chat_completion(new_id("chatcmpl"), chat.model, reply), 200, headers


def chat_events(items: ReplyEvents, chat: CompletionRequest) -> Iterator[str]:
    """Frame a reply as chat.completion.chunk events: role, content deltas, finish, usage, [DONE]."""
    completion_id, created = new_id("chatcmpl"), int(time.time())

    def chunk(**fields) -> str:
        return sse_event(chat_chunk(completion_id, chat.model, created, include_usage=chat.include_usage, **fields))

    with closing(items):  # closing the stream cancels the generation when the client goes away
        yield chunk(delta={"role": "assistant", "content": ""})
        for item in guarded(items):
            if isinstance(item, str):
                yield chunk(delta={"content": item})
            elif isinstance(item, Reply):
                yield chunk(reason=finish_reason(item))
                if chat.include_usage:
                    yield chunk(usage=usage_info(item.usage, item.truncated_turns))
            else:
                yield sse_event(item.as_dict())  # an error after the stream began
    yield sse_event("[DONE]")


def serve_text(completion: CompletionRequest, engine: Engine):
    """Answer a completion for one prompt or a list of them."""
    assert completion.prompts is not None  # a text completion carries prompts
    preset = engine.presets.get(completion.preset)
    probe = client_gone_probe()
    streams = start_all(
        [
            GenerationRequest(completion.params, prompt=prompt, preset=preset, client_gone=probe)
            for prompt in completion.prompts
        ],
        engine,
    )
    if completion.stream:
        return event_stream(text_events(completion.prompts, streams, completion))
    choices, usage = [], Usage(0, 0)
    for index, (prompt, items) in enumerate(zip(completion.prompts, streams)):
        reply = final(items, Reply)
        choices.append(text_choice(index, prompt + reply.text if completion.echo else reply.text, finish_reason(reply)))
        usage = Usage(
            usage.prompt_tokens + reply.usage.prompt_tokens, usage.completion_tokens + reply.usage.completion_tokens
        )
    return text_completion(new_id("cmpl"), completion.model, choices, usage)


def text_events(prompts: list[str], streams: list[ReplyEvents], completion: CompletionRequest) -> Iterator[str]:
    """Frame completions for each prompt in turn as text_completion chunks, then [DONE]."""
    completion_id, created = new_id("cmpl"), int(time.time())
    usage = Usage(0, 0)

    def chunk(index: int, text: str, reason: str | None = None) -> str:
        return sse_event(
            text_completion(completion_id, completion.model, [text_choice(index, text, reason)], None, created)
        )

    for index, (prompt, items) in enumerate(zip(prompts, streams)):
        with closing(items):
            if completion.echo:
                yield chunk(index, prompt)
            for item in guarded(items):
                if isinstance(item, str):
                    yield chunk(index, item)
                elif isinstance(item, Reply):
                    yield chunk(index, "", finish_reason(item))
                    usage = Usage(
                        usage.prompt_tokens + item.usage.prompt_tokens,
                        usage.completion_tokens + item.usage.completion_tokens,
                    )
                elif isinstance(item, PalaverError):
                    yield sse_event(item.as_dict())
                    yield sse_event("[DONE]")
                    return
    if completion.include_usage:
        yield sse_event({**text_completion(completion_id, completion.model, [], usage, created)})
    yield sse_event("[DONE]")


def start_all(requests: list[GenerationRequest], engine: Engine) -> list[ReplyEvents]:
    """Queue every request before waiting on any, so they are generated in one batch."""
    streams = [engine.stream(request) for request in requests]
    for stream in streams:
        next(stream)  # returns once the request has joined; a bad prompt raises here, with its status
    return streams
