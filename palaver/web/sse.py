"""Server-Sent Events: framing, the streamed response, and a guard that turns a failure into a last event."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from flask import Response, stream_with_context

from palaver.core.errors import GenerationFailed, PalaverError
from palaver.core.types import PromptInfo

log = logging.getLogger("palaver")


def sse_event(payload: Any, event: str | None = None) -> str:
    """Frame one Server-Sent Event: its name, if any, a data line of JSON (or a literal string) and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


def event_stream(events: Iterator[str], headers: dict | None = None) -> Response:
    """Send framed events as they come; the server sees at once when the client is gone."""
    return Response(
        stream_with_context(events),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )


def guarded(items: Iterator) -> Iterator:
    """Pass a stream's items on, turning a failure into a last error item instead of a broken stream."""
    try:
        for item in items:
            if not isinstance(item, PromptInfo):
                yield item
    except PalaverError as exc:
        yield exc
    except Exception:
        log.exception("streaming failed")
        yield GenerationFailed()
