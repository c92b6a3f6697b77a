"""Wire the engine and conversation memory into a Flask app, and hand them to views."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import palaver.web.security as security
from palaver.backends import Backend, create_backend
from palaver.config import Settings
from palaver.conversations import Chat
from palaver.errors import GenerationFailed, InvalidRequest, PalaverError, PayloadTooLarge
from palaver.storage.database import connect, database_url, upgrade
from palaver.storage.store import ConversationStore
from palaver.types import CALLER, REPLY_LISTENER, Caller, PromptInfo, Reply
from palaver.web import probes
from palaver.web.fairness import ClientShares
from palaver.web.metrics import Metrics

log = logging.getLogger("palaver")
request_log = logging.getLogger("palaver.requests")

SURFACES = {"pages": "page", "api": "api", "v1": "openai", "mlflow": "mlflow", "health": "health"}


def init_app(app: Flask, settings: Settings) -> None:
    """Create the app's engine and conversation store; start loading when preload is on."""
    metrics = Metrics()
    engine = create_backend(settings, observer=metrics)
    metrics.watch(engine)
    database = connect(database_url(settings.database_url, settings.cache_dir))
    upgrade(database)  # every start brings the schema up to date; `palaver db upgrade` does the same alone
    store = ConversationStore(database, settings.max_conversations, settings.conversation_ttl)
    store.start_sweeping(settings.sweep_interval)
    chat = Chat(
        store,
        engine,
        settings.max_waiting_per_conversation,
        settings.request_timeout,
        settings.max_history_turns,
        settings.max_conversation_turns,
    )
    app.extensions["palaver"] = {
        "settings": settings,
        "engine": engine,
        "chat": chat,
        "metrics": metrics,
        "shares": ClientShares(settings.client_share),
    }
    security.init_app(app, settings)
    # In this order: cheap refusals come before the body is read, and budgets are charged last.
    app.before_request(start_request_record)
    app.before_request(security.refuse_foreign_requests)
    app.before_request(identify_caller)
    app.before_request(load_body)
    app.before_request(security.apply_rate_limits)
    app.after_request(finish_request_record)
    app.after_request(hold_share_until_sent)
    app.teardown_request(give_back_share)
    probes.install(engine.describe)  # the worker's poller answers /healthz and /readyz without a thread
    if settings.preload:
        engine.start()


def get_settings() -> Settings:
    return current_app.extensions["palaver"]["settings"]


def get_engine() -> Backend:
    return current_app.extensions["palaver"]["engine"]


def get_chat() -> Chat:
    return current_app.extensions["palaver"]["chat"]


def get_metrics() -> Metrics:
    return current_app.extensions["palaver"]["metrics"]


def get_shares() -> ClientShares:
    return current_app.extensions["palaver"]["shares"]


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


def identify_caller() -> None:
    """Name the request's client, for its budgets and the engine's round-robin; hold a place in its share."""
    g.caller = security.caller_id()
    CALLER.set(Caller(g.caller, security.token_reservation(g.caller)))
    if request.endpoint not in security.PROBE_ENDPOINTS:
        g.give_back_share = get_shares().take(g.caller)


def hold_share_until_sent(response: Response) -> Response:
    """Give the client's place back once the answer is sent: for a stream, when its last event has gone."""
    give_back = g.pop("give_back_share", None)
    if give_back is not None:
        response.call_on_close(give_back)
    return response


def give_back_share(_error: BaseException | None = None) -> None:
    """Give the place back if no answer took it over (Flask tears a streamed request down before it is sent)."""
    give_back = g.pop("give_back_share", None)
    if give_back is not None:
        give_back()


def load_body() -> None:
    g.body = read_body()
    g.body_read = True


def submitted_form() -> Mapping[str, str]:
    """Return the request's form fields, or none when its body was never read (refused before, or too large)."""
    return request.form if g.get("body_read") else {}


def read_body() -> bytes:
    """Read the whole body once, so bad framing or an oversized body is one clear 400 or 413 everywhere."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return b""
    limit = get_settings().max_body_bytes
    try:
        data = request.get_data(cache=True)
        if request.content_length is None and len(data) >= limit:
            request.stream.read(1)  # a chunked body is cut at the limit silently: this raises if more was sent
        return data
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"the request body must be at most {limit} bytes") from None
    except Exception as exc:  # the server's parser found bad chunk framing, or the client hung up mid-body
        log.info("unreadable request body: %s: %s", exc.__class__.__name__, exc)
        raise InvalidRequest("the request body could not be read: its framing is invalid or it ended early") from None


def finish_request_record(response: Response) -> Response:
    """Count the request, and log one structured line once its body (streamed or not) is sent."""
    surface = SURFACES.get(request.blueprint or "", "other")
    get_metrics().requests.labels(surface, str(response.status_code)).inc()
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
    if get_settings().log_messages:
        record["body"] = g.get("body", b"")[:2000].decode("utf-8", errors="replace")
    started, tokens = g.get("started", time.monotonic()), g.get("tokens", {})

    def write_line() -> None:
        request_log.info(json.dumps({**record, **tokens, "latency_ms": round((time.monotonic() - started) * 1000)}))

    response.call_on_close(write_line)
    return response


def secret_key(settings: Settings) -> str:
    """Return the configured secret key, or one generated once and kept in the cache directory."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.cache_dir) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        # O_EXCL: when two workers race, one writes and both read the same key.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key)
    except FileExistsError:
        return path.read_text().strip()
    log.info("generated a session secret key in %s", path)
    return key


def to_palaver_error(exc: Exception) -> PalaverError:
    """Translate any exception into a client-safe error once, at the boundary; log the unexpected."""
    if isinstance(exc, PalaverError):
        return exc
    if isinstance(exc, RequestEntityTooLarge):
        return PayloadTooLarge(f"the request body must be at most {get_settings().max_body_bytes} bytes")
    if isinstance(exc, HTTPException):
        error = PalaverError(exc.description or exc.name)
        error.status = exc.code or 500
        error.type = "not_found_error" if exc.code == 404 else "invalid_request_error"
        return error
    log.error("unhandled error", exc_info=exc)
    return PalaverError("internal server error; the error has been logged")


def json_error(error: PalaverError, body: dict[str, Any] | None = None):
    """Render an error as JSON (OpenAI's envelope unless a protocol gives its own body), with Retry-After."""
    response = jsonify(body or error.as_dict())
    response.status_code = error.status
    if error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def sse_event(payload: Any) -> str:
    """Frame one Server-Sent Event: a data line of JSON (or a literal string) and a blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def event_stream(events: Iterator[str], headers: dict | None = None) -> Response:
    """Send framed events as they come; the server sees at once when the client is gone."""
    return Response(
        stream_with_context(events),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )


def client_gone_probe() -> Callable[[], bool] | None:
    """Return a check for whether this request's client has closed its connection."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            # Readable with nothing to read means the peer closed; pipelined bytes mean it is still there.
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return gone


def read_json() -> Any:
    """Parse the request body as JSON whatever its content type, as curl users expect."""
    try:
        body = json.loads(g.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the request body must be valid JSON") from None
    check_json_values(body)
    return body


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json_values(body: Any) -> None:
    """Refuse NaN, Infinity and lone surrogates anywhere in a parsed body, naming the field."""
    pending: list[tuple[Any, str]] = [(body, "")]
    while pending:  # a loop, not recursion: the body may nest as deep as the parser allowed
        value, path = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(
                f"'{path or 'body'}' must be a finite number; NaN and Infinity are not allowed", param=path or None
            )
        if isinstance(value, str) and LONE_SURROGATE.search(value):
            raise InvalidRequest(
                f"'{path or 'body'}' must be valid Unicode text; it holds a lone surrogate", param=path or None
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if LONE_SURROGATE.search(key):
                    raise InvalidRequest("field names must be valid Unicode text; one holds a lone surrogate")
                pending.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            pending.extend((item, f"{path}[{index}]") for index, item in enumerate(value))


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
