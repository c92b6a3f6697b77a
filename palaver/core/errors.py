"""Errors: each one meant for clients carries its HTTP status and OpenAI-style type."""

from __future__ import annotations

from typing import Any


class ConfigurationError(Exception):
    """A setting has a value the server cannot start with."""


class ModelRefused(ValueError):
    """A model file cannot be served as it is (a count out of bounds, a template past a bound): a line says why."""


class PalaverError(Exception):
    status = 500
    type = "server_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, retry_after: int | None = None
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(PalaverError):
    status = 400
    type = "invalid_request_error"


class NotFound(PalaverError):
    status = 404
    type = "not_found_error"


class PayloadTooLarge(PalaverError):
    status = 413
    type = "invalid_request_error"


class ModelNotReady(PalaverError):
    status = 503
    type = "model_not_ready"


class GenerationTimeout(PalaverError):
    status = 504
    type = "timeout_error"


class GenerationFailed(PalaverError):
    status = 500
    type = "server_error"

    def __init__(self, message: str = "generation failed; the error has been logged", **details: Any):
        super().__init__(message, **details)


class ClientDisconnected(PalaverError):
    status = 499  # nginx's code for a client that closed the request; nobody receives it
    type = "client_disconnected"


class Unauthorized(PalaverError):
    status = 401
    type = "invalid_request_error"


class ConversationBusy(PalaverError):
    status = 409
    type = "conflict_error"


class ServerBusy(PalaverError):
    status = 429
    type = "rate_limit_error"


class Forbidden(PalaverError):
    status = 403
    type = "permission_error"


class UnsupportedMediaType(PalaverError):
    status = 415
    type = "invalid_request_error"


class RateLimited(PalaverError):
    status = 429
    type = "rate_limit_error"
