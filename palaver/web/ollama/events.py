"""A streamed reply as Ollama streams one: newline-delimited JSON objects, the last with done: true."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from flask import Response, stream_with_context

from palaver.core.errors import PalaverError
from palaver.core.types import ReasoningDelta, Reply, ReplyEvents
from palaver.web.ollama.response_schemas import (
    AssistantMessage,
    ChatResponse,
    Clock,
    ErrorResponse,
    GenerateResponse,
    ToolCallObject,
)
from palaver.web.sse import guarded

NDJSON = "application/x-ndjson"


def json_line(payload: dict[str, Any]) -> str:
    """Frame one object of a stream: JSON on one line."""
    return json.dumps(payload, ensure_ascii=False) + "\n"


def json_lines(lines: Iterator[str], headers: dict[str, str] | None = None) -> Response:
    """Send lines as they come, with no proxy buffering them; the server sees at once when the client is gone."""
    return Response(
        stream_with_context(lines),
        mimetype=NDJSON,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )


def chat_lines(stream: ReplyEvents, model: str, clock: Clock, after: Callable[[], None]) -> Iterator[str]:
    """Frame a chat's reply: a message part per piece of reasoning, then of text, the calls together, then the end
    with its counts."""

    def part(text: str, thinking: str | None) -> ChatResponse:
        return ChatResponse(model=model, message=AssistantMessage(content=text, thinking=thinking))

    def ending(reply: Reply) -> Iterator[ChatResponse]:
        if reply.tool_calls:  # whole calls, as Ollama sends them, once their arguments are complete
            calls = [ToolCallObject.of(call) for call in reply.tool_calls]
            yield ChatResponse(model=model, message=AssistantMessage(tool_calls=calls))
        yield ChatResponse.ended(model, reply, clock)

    return reply_lines(stream, clock, part, ending, after)


def generate_lines(stream: ReplyEvents, model: str, clock: Clock, after: Callable[[], None]) -> Iterator[str]:
    """Frame a generation: a part per piece of reasoning, then of text, then the end with its counts."""

    def part(text: str, thinking: str | None) -> GenerateResponse:
        return GenerateResponse(model=model, response=text, thinking=thinking)

    def ending(reply: Reply) -> Iterator[GenerateResponse]:
        yield GenerateResponse.ended(model, reply, clock)

    return reply_lines(stream, clock, part, ending, after)


def reply_lines(
    stream: ReplyEvents,
    clock: Clock,
    part: Callable[[str, str | None], ChatResponse | GenerateResponse],  # text, or "" and reasoning
    ending: Callable[[Reply], Iterator[ChatResponse | GenerateResponse]],
    after: Callable[[], None],
) -> Iterator[str]:
    """Frame a reply's events as lines; an error after the stream began is a last {"error"} line. Then call after."""
    # Closing the stream cancels its generation, when the client goes away or an error ends it.
    with closing(stream):
        for item in guarded(stream):
            clock.saw(item)
            if isinstance(item, str):
                yield json_line(part(item, None).as_json())
            elif isinstance(item, ReasoningDelta):  # as Ollama streams thinking: the content empty beside it
                yield json_line(part("", item.text).as_json())
            elif isinstance(item, Reply):
                yield from (json_line(answer.as_json()) for answer in ending(item))
            elif isinstance(item, PalaverError):
                yield json_line(ErrorResponse.of(item).model_dump())
                return
    after()
