"""Errors at the web boundary: any exception translated once into a client-safe error, and rendered as JSON."""

from __future__ import annotations

import logging
from typing import Any

from flask import jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from palaver.core.errors import PalaverError, PayloadTooLarge
from palaver.web.services import services

log = logging.getLogger("palaver")


def to_palaver_error(exc: Exception) -> PalaverError:
    """Translate any exception into a client-safe error once, at the boundary; log the unexpected."""
    if isinstance(exc, PalaverError):
        return exc
    if isinstance(exc, RequestEntityTooLarge):
        return PayloadTooLarge(f"the request body must be at most {services().settings.max_body_bytes} bytes")
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
