"""Request bodies: read once before any view, and checked for NaN, Infinity and lone surrogates when JSON."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from flask import g, request
from werkzeug.exceptions import RequestEntityTooLarge

from palaver.core.errors import InvalidRequest, PayloadTooLarge
from palaver.web.services import services

log = logging.getLogger("palaver")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def load_body() -> None:
    """Read the request's whole body into g.body, before any view runs."""
    g.body = read_body()
    g.body_read = True


def read_body() -> bytes:
    """Read the whole body once, so bad framing or an oversized body is one clear 400 or 413 everywhere."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return b""
    limit = services().settings.max_body_bytes
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


def submitted_form() -> Mapping[str, str]:
    """Return the request's form fields, or none when its body was never read (refused before, or too large)."""
    return request.form if g.get("body_read") else {}


def read_json() -> Any:
    """Parse the request body as JSON whatever its content type, as curl users expect."""
    try:
        body = json.loads(g.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the request body must be valid JSON") from None
    check_json_values(body)
    return body


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
