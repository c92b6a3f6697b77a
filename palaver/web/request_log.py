"""The request log: an id and a clock for each request, and one structured line once its answer is sent."""

from __future__ import annotations

import json
import logging
import time
import uuid

from flask import Response, g, request

from palaver.core.types import REPLY_LISTENER, Reply
from palaver.web.services import services

request_log = logging.getLogger("palaver.requests")
SURFACES = {
    "pages": "page",
    "api": "api",
    "v1": "openai",
    "tokens": "openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "responses": "openai",
    "mlflow": "mlflow",
    "health": "health",
    "share_links": "page",
    "share_links_api": "api",
}


def start_request_record() -> None:
    """Give the request an id and a clock, and tally the tokens of every reply it produces for its log line."""
    g.request_id = uuid.uuid4().hex[:16]
    g.started = time.monotonic()
    g.body = b""
    g.tokens = tokens = {"prompt_tokens": 0, "completion_tokens": 0}

    def count(reply: Reply) -> None:
        tokens["prompt_tokens"] += reply.usage.prompt_tokens
        tokens["completion_tokens"] += reply.usage.completion_tokens

    REPLY_LISTENER.set(count)


def finish_request_record(response: Response) -> Response:
    """Count the request, and log one structured line once its body (streamed or not) is sent."""
    surface = SURFACES.get(request.blueprint or "", "other")
    services().metrics.requests.labels(surface, str(response.status_code)).inc()
    request_id = g.get("request_id", "-")
    response.headers["X-Request-Id"] = request_id
    record = {
        "event": "request",
        "id": request_id,
        "surface": surface,
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
    }
    if services().settings.log_messages:
        record["body"] = g.get("body", b"")[:2000].decode("utf-8", errors="replace")
    started, tokens = g.get("started", time.monotonic()), g.get("tokens", {})

    def write_line() -> None:
        request_log.info(json.dumps({**record, **tokens, "latency_ms": round((time.monotonic() - started) * 1000)}))

    response.call_on_close(write_line)
    return response
