"""The OpenAI API as the upstream speaks it: Palaver's tools sent out, chunks read back, failures translated."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from palaver.core.errors import GenerationTimeout, InvalidRequest, ModelNotReady, PalaverError, RateLimited
from palaver.core.parameters import GenerationParams
from palaver.core.requests import GenerationRequest
from palaver.core.types import TokenLogprob, ToolCallDelta, TopLogprob, Usage

if TYPE_CHECKING:
    import openai

log = logging.getLogger("palaver.backends.upstream")

RETRY_AFTER_SECONDS = 5
THINKING_EFFORT = "medium"  # OpenAI's default effort: a model's thinking has no degrees here


def translate(exc: Exception) -> PalaverError:
    """Map an upstream failure onto Palaver's own contract; the details go to the log, never to the client."""
    import openai  # imported once an upstream is used: a server without one never pays for it

    if isinstance(exc, openai.APITimeoutError):
        return GenerationTimeout("the upstream model server did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        log.warning("the upstream model server is unreachable: %s", exc)
        return ModelNotReady("the upstream model server is unreachable; retry shortly", retry_after=RETRY_AFTER_SECONDS)
    if isinstance(exc, openai.APIStatusError):
        retry_after = exc.response.headers.get("retry-after", "")
        wait = int(retry_after) if retry_after.isdigit() else RETRY_AFTER_SECONDS
        if exc.status_code == 429:
            return RateLimited("the upstream model server is busy; retry shortly", retry_after=wait)
        if exc.status_code in (400, 413, 422):
            return InvalidRequest(f"the upstream model server refused the request: {upstream_message(exc)}")
        log.error("the upstream model server answered %s: %s", exc.status_code, upstream_message(exc))
        return ModelNotReady("the upstream model server failed; retry shortly", retry_after=wait)
    log.error("the upstream call failed", exc_info=exc)
    return ModelNotReady("the upstream model server failed; retry shortly", retry_after=RETRY_AFTER_SECONDS)


def upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            return message[:500]
    return str(exc.message)[:500]


@dataclass(frozen=True)
class Piece:
    """What one choice of an upstream chunk carries."""

    text: str
    finish_reason: str | None
    usage: Usage | None
    calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    reasoning: str = ""  # a thinking model's reasoning, as the upstream keeps it apart from the answer


def thinking_fields(params: GenerationParams) -> dict[str, Any]:
    """Return a request's thinking choice as the upstream takes it: vLLM, SGLang and llama-server read
    chat_template_kwargs, OpenAI and Ollama reasoning_effort (sent only to turn thinking on: vLLM's has no none)."""
    if params.thinking is None:
        return {}
    fields: dict[str, Any] = {"extra_body": {"chat_template_kwargs": {"enable_thinking": params.thinking}}}
    if params.thinking:
        fields["reasoning_effort"] = THINKING_EFFORT
    return fields


def sampling_fields(params: GenerationParams, model: str | None, max_reply_tokens: int | None) -> dict[str, Any]:
    """Return a streamed request's model and sampling as OpenAI's fields, held to the longest reply the upstream
    allows (as the local engine holds a reply to its model's)."""
    fields: dict[str, Any] = {
        "model": model,
        "max_tokens": min(params.max_new_tokens, max_reply_tokens or params.max_new_tokens),
        "temperature": params.temperature if params.do_sample else 0.0,
        "top_p": params.top_p if params.do_sample else 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if params.seed is not None:
        fields["seed"] = params.seed
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.json_schema is not None:  # the upstream enforces it, or refuses it with its own 400
        schema = {"name": "reply", "schema": json.loads(params.json_schema), "strict": True}
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    return fields


def tool_fields(request: GenerationRequest) -> dict[str, Any]:
    """Return the request's tools as OpenAI's fields, for the upstream to render and enforce."""
    tools = request.tools
    if tools is None:
        return {}
    choice: Any = tools.choice
    if tools.named is not None:
        choice = {"type": "function", "function": {"name": tools.named}}
    fields: dict[str, Any] = {"tools": [f.as_tool() for f in tools.functions], "tool_choice": choice}
    if not tools.parallel:  # sent only when it differs from the default, which some servers do not take
        fields["parallel_tool_calls"] = False
    return fields


def upstream_logprobs(logprobs: Any) -> list[TokenLogprob]:
    """Return the logprobs of a chat choice (content entries) or a text choice (parallel lists)."""
    if logprobs is None:
        return []
    if getattr(logprobs, "content", None) is not None:
        return [
            TokenLogprob(
                entry.token,
                tuple(entry.bytes or entry.token.encode()),
                entry.logprob,
                tuple(TopLogprob(t.token, tuple(t.bytes or t.token.encode()), t.logprob) for t in entry.top_logprobs),
            )
            for entry in logprobs.content
        ]
    tokens, values = getattr(logprobs, "tokens", None) or [], getattr(logprobs, "token_logprobs", None) or []
    tops = getattr(logprobs, "top_logprobs", None) or [{}] * len(tokens)
    return [
        TokenLogprob(
            token, tuple(token.encode()), value, tuple(TopLogprob(t, tuple(t.encode()), v) for t, v in top.items())
        )
        for token, value, top in zip(tokens, values, tops)
    ]


def upstream_usage(usage: Any) -> Usage | None:
    """Return a chunk's usage, with the reasoning's tokens where the upstream counts them apart."""
    if usage is None:
        return None
    details = getattr(usage, "completion_tokens_details", None)
    reasoning = getattr(details, "reasoning_tokens", None) or 0
    return Usage(usage.prompt_tokens, usage.completion_tokens, reasoning)


def reasoning_of(delta: Any) -> str:
    """Return a delta's reasoning: reasoning_content (llama-server's, DeepSeek's) or reasoning (vLLM's), not both."""
    return getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None) or ""


def pieces(chunks: Any) -> Iterator[Piece]:
    """Yield the text, reasoning, calls, logprobs, finish reason and usage of chat or text completion chunks."""
    for chunk in chunks:
        usage = upstream_usage(chunk.usage)
        for choice in chunk.choices or []:
            delta = getattr(choice, "delta", None)
            content = (delta.content if delta is not None else getattr(choice, "text", None)) or ""
            calls = [
                ToolCallDelta(
                    call.index,
                    call.id,
                    call.function.name if call.function else None,
                    (call.function.arguments if call.function else None) or "",
                )
                for call in (getattr(delta, "tool_calls", None) or [])
            ]
            logprobs = upstream_logprobs(choice.logprobs)
            yield Piece(content, choice.finish_reason, usage, calls, logprobs, reasoning_of(delta))
            usage = None
        if usage is not None:
            yield Piece("", None, usage)
