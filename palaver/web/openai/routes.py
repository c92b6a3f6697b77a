"""The OpenAI-compatible API under /v1: chat completions, completions, embeddings and models, streamed or not."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint

from palaver.backends import ModelRouter
from palaver.core.errors import PalaverError
from palaver.core.requests import GenerationRequest
from palaver.core.types import ReasoningDelta, Reply, ReplyEvents, TokenLogprob, ToolCallDelta, Usage, final
from palaver.web.body import read_json
from palaver.web.connection import client_gone_probe
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.generations import TRUNCATED_HEADER, closing_all, start_all
from palaver.web.openai.embeddings import CreateEmbeddingRequest, serve_embeddings
from palaver.web.openai.request_schemas import ChatCompletionRequest, TextCompletionRequest
from palaver.web.openai.response_schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionUsage,
    Delta,
    ModelCard,
    ModelList,
    TextChoice,
    TextCompletion,
    TextLogprobs,
    ToolCallDeltaObject,
    finish_reason,
    new_id,
)
from palaver.web.security import require_api_key
from palaver.web.services import services
from palaver.web.sse import event_stream, guarded, sse_event

v1 = Blueprint("v1", __name__, url_prefix="/v1")
v1.before_request(require_api_key)


@v1.post("/chat/completions")
def chat_completions():
    return serve_chat(ChatCompletionRequest.parse(read_json(), {"settings": services().settings}))


@v1.post("/completions")
def completions():
    return serve_text(TextCompletionRequest.parse(read_json(), {"settings": services().settings}))


@v1.post("/embeddings")
def embeddings():
    return serve_embeddings(CreateEmbeddingRequest.parse(read_json()))


@v1.get("/models")
def models():
    """List every configured model with its state; a server of one model waits for it, as before, to give limits."""
    router = services().backend
    if len(router.names) == 1 and router.slots[router.default].limits is None:
        router.model_limits(services().settings.load_wait)  # its limits, or a 503 while it loads
    return ModelList(data=[ModelCard.of(router.describe_model(name)) for name in router.names]).model_dump()


@v1.get("/models/<path:name>")
def model(name: str):
    """Describe one model, without loading it."""
    router = services().backend
    return ModelCard.of(router.describe_model(router.resolve(name))).model_dump()


@v1.errorhandler(Exception)
def v1_error(exc: Exception):
    return json_error(to_palaver_error(exc))


def serve_chat(chat: ChatCompletionRequest, *, require_model: bool = True):
    """Answer a chat completion, as one object or as a stream of chunks; n choices share the prompt's prefill."""
    app = services()
    settings, engine = app.settings, app.backend
    model = chat.served_model(engine, required=require_model)
    messages = app.presets.get(chat.preset).apply([message.to_message() for message in chat.messages])
    probe, tools, grammar = client_gone_probe(), chat.tool_use(), chat.reply_grammar()
    requests = [
        GenerationRequest(params, messages=messages, tools=tools, grammar=grammar, model=model, client_gone=probe)
        for params in chat.choice_params(chat.generation_params(settings.generation_defaults()))
    ]
    # Errors found before any text (a prompt too long, a loading model) keep their status.
    streams, info = start_all(requests, engine, "n")
    headers = {TRUNCATED_HEADER: str(info.truncated_turns)}
    stamp = system_fingerprint(engine, model)
    model = engine.public_name(model)
    if chat.stream:
        return event_stream(chat_events(streams, model, chat.include_usage, stamp, bool(chat.logprobs)), headers)
    with closing_all(streams):
        replies = [final(items, Reply) for items in streams]
    return ChatCompletion.of(model, replies, stamp).model_dump(), 200, headers


def system_fingerprint(router: ModelRouter, model: str) -> str | None:
    """Return the model's weights' and arithmetic's fingerprint; None through an upstream, which has its own."""
    return router.fingerprint(model)


def chat_events(
    streams: list[ReplyEvents], model: str, include_usage: bool, stamp: str | None = None, logprobs: bool = False
) -> Iterator[str]:
    """Frame replies as chat.completion.chunk events, choice after choice: role, deltas, finish; usage, [DONE]."""
    completion_id, created = new_id("chatcmpl"), int(time.time())
    usage, truncated = Usage(0, 0), 0

    def chunk(*choices: ChunkChoice, usage: CompletionUsage | None = None) -> str:
        event = ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=list(choices), usage=usage, system_fingerprint=stamp
        )
        return sse_event(event.as_event(include_usage))

    # Closing a stream cancels its generation: every choice's, when the client goes away or an error ends them.
    with closing_all(streams):
        for index, items in enumerate(streams):
            yield chunk(ChunkChoice(index=index, delta=Delta(role="assistant", content="")))
            pending: list[TokenLogprob] = []  # a token's logprob comes before its text, with the next chunk
            for item in guarded(items):
                if isinstance(item, TokenLogprob):
                    pending.append(item)
                elif isinstance(item, str):
                    yield chunk(
                        ChunkChoice(index=index, delta=Delta(content=item), logprobs=drained(pending, logprobs))
                    )
                elif isinstance(item, ReasoningDelta):
                    yield chunk(
                        ChunkChoice(index=index, delta=Delta.thought(item.text), logprobs=drained(pending, logprobs))
                    )
                elif isinstance(item, ToolCallDelta):
                    call = ToolCallDeltaObject.of(item)
                    yield chunk(
                        ChunkChoice(index=index, delta=Delta(tool_calls=[call]), logprobs=drained(pending, logprobs))
                    )
                elif isinstance(item, Reply):
                    ending = drained(pending, logprobs) if pending else None
                    yield chunk(ChunkChoice(index=index, finish_reason=finish_reason(item), logprobs=ending))
                    usage = combined(usage, item.usage, first=index == 0)
                    truncated = item.truncated_turns
                else:
                    yield sse_event(item.as_dict())  # an error after the stream began
                    yield sse_event("[DONE]")
                    return
    if include_usage:
        yield chunk(usage=CompletionUsage.of(usage, truncated))
    yield sse_event("[DONE]")


def drained(pending: list[TokenLogprob], wanted: bool) -> ChoiceLogprobs | None:
    """Return the logprobs of the tokens read since the last chunk, emptying pending; None if none were asked."""
    entries = ChoiceLogprobs.of(pending) if wanted else None
    pending.clear()
    return entries


def combined(total: Usage, usage: Usage, *, first: bool) -> Usage:
    """Add a choice's usage: the prompt counts once, every choice's completion counts."""
    prompt = usage.prompt_tokens if first else total.prompt_tokens
    return Usage(
        prompt, total.completion_tokens + usage.completion_tokens, total.reasoning_tokens + usage.reasoning_tokens
    )


def serve_text(completion: TextCompletionRequest, *, require_model: bool = True):
    """Answer a completion for one prompt or a list of them."""
    app = services()
    settings, engine = app.settings, app.backend
    model = completion.served_model(engine, required=require_model)
    params = completion.generation_params(settings.generation_defaults())
    preset = app.presets.get(completion.preset)
    probe, grammar = client_gone_probe(), completion.reply_grammar()
    requests = [
        GenerationRequest(params, prompt=preset.format(text), grammar=grammar, model=model, client_gone=probe)
        for text in completion.prompt
    ]
    streams, _ = start_all(requests, engine, "prompt")
    stamp = system_fingerprint(engine, model)
    model = engine.public_name(model)
    if completion.stream:
        return event_stream(text_events(streams, completion, model, stamp))
    with closing_all(streams):
        replies = [final(items, Reply) for items in streams]
    choices = [
        TextChoice(
            index=index,
            text=prompt + reply.text if completion.echo else reply.text,
            logprobs=text_logprobs(completion, reply.logprobs, len(prompt) if completion.echo else 0),
            finish_reason=finish_reason(reply),
        )
        for index, (prompt, reply) in enumerate(zip(completion.prompt, replies))
    ]
    usage = sum((reply.usage for reply in replies), Usage(0, 0))
    return TextCompletion(
        id=new_id("cmpl"), model=model, choices=choices, usage=CompletionUsage.of(usage), system_fingerprint=stamp
    ).model_dump()


def text_events(
    streams: list[ReplyEvents], completion: TextCompletionRequest, model: str, stamp: str | None = None
) -> Iterator[str]:
    """Frame completions for each prompt in turn as text_completion chunks, then [DONE]."""
    completion_id, created = new_id("cmpl"), int(time.time())
    usage = Usage(0, 0)

    def chunk(choices: list[TextChoice], usage: CompletionUsage | None = None) -> str:
        event = TextCompletion(
            id=completion_id, created=created, model=model, choices=choices, usage=usage, system_fingerprint=stamp
        )
        return sse_event(event.as_event())

    with closing_all(streams):
        for index, (prompt, items) in enumerate(zip(completion.prompt, streams)):
            offset = len(prompt) if completion.echo else 0
            if completion.echo:
                yield chunk([TextChoice(index=index, text=prompt)])
            pending: list[TokenLogprob] = []
            for item in guarded(items):
                if isinstance(item, TokenLogprob):
                    pending.append(item)
                elif isinstance(item, str):
                    logprobs = text_logprobs(completion, pending, offset)
                    offset += sum(len(entry.token) for entry in pending)
                    pending = []
                    yield chunk([TextChoice(index=index, text=item, logprobs=logprobs)])
                elif isinstance(item, Reply):
                    yield chunk([TextChoice(index=index, text="", finish_reason=finish_reason(item))])
                    usage += item.usage
                elif isinstance(item, PalaverError):
                    yield sse_event(item.as_dict())
                    yield sse_event("[DONE]")
                    return
    if completion.include_usage:
        yield chunk([], CompletionUsage.of(usage))
    yield sse_event("[DONE]")


def text_logprobs(
    completion: TextCompletionRequest, entries: tuple[TokenLogprob, ...] | list[TokenLogprob] | None, offset: int
) -> TextLogprobs | None:
    """Describe tokens' logprobs in the completions API's shape, when the request asked for them."""
    if completion.logprobs is None or entries is None:
        return None
    return TextLogprobs.of(entries, offset, top=completion.logprobs > 0)
