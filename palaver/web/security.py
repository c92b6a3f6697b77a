"""The web layer's defences: API keys, page and account sign-in, cross-site and host checks, security headers."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from urllib.parse import urlsplit

from flask import Response, current_app, request, session
from werkzeug.sansio.utils import host_is_trusted

from palaver.core.errors import Forbidden, InvalidRequest, Unauthorized, UnsupportedMediaType
from palaver.storage.records import Person
from palaver.web.accounts.identity import person_of_request
from palaver.web.headers import CONTENT_SECURITY_POLICY, SECURITY_HEADERS
from palaver.web.services import services

log = logging.getLogger("palaver")

# Routes that run the model: keys guard them all, and the token budget applies to them.
GENERATING_ENDPOINTS = {
    "pages.send",
    "pages.send_in",
    "api.chat",
    "v1.chat_completions",
    "v1.completions",
    "v1.embeddings",
    "anthropic.messages",
    "ollama.chat",
    "ollama.generate",
    "ollama.embed",
    "ollama.embeddings",
    "responses.create",
    "mlflow.invocations",
}
# Constant answers for a platform's probes: no host check, no key, no rate limit.
PROBE_ENDPOINTS = {"health.probe", "mlflow.ping", "static"}
JSON_BODY_BLUEPRINTS = {
    "v1": ("application/json",),
    "tokens": ("application/json",),
    "anthropic": ("application/json",),
    # Ollama's clients send JSON, or no type at all; curl -d (as Ollama's docs post) sends a form's type, which a
    # cross-site form cannot use to send JSON (it percent-encodes the body), and browsers send Origin besides.
    "ollama": ("application/json", "", "application/x-www-form-urlencoded"),
    "responses": ("application/json",),
    "mlflow": ("application/json", "text/csv", "application/csv"),
}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def refuse_foreign_requests() -> None:
    """Refuse other hosts (DNS rebinding), cross-site writes, and non-JSON bodies on the JSON-only APIs."""
    if request.endpoint in PROBE_ENDPOINTS:
        return
    if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and not request.environ.get("HTTP_HOST"):
        raise InvalidRequest("an HTTP/1.1 request must carry a Host header", code="host_missing")
    allowed = services().settings.allowed_host_list
    if allowed and not host_is_trusted(request.host, allowed):
        raise InvalidRequest("this server does not answer for that Host header", code="host_not_allowed")
    if request.method not in UNSAFE_METHODS:
        return
    if not same_origin(request.headers.get("Origin")) or request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise Forbidden(
            "cross-site requests are refused; call this API from a server or from the page itself",
            code="cross_site_request",
        )
    accepted = JSON_BODY_BLUEPRINTS.get(request.blueprint or "")
    if accepted and request.method != "DELETE" and request.mimetype not in accepted:  # a DELETE has no body
        raise UnsupportedMediaType(
            f"the body must be sent as {' or '.join(kind or 'no content type' for kind in accepted)} "
            f"(got '{request.mimetype or 'no content type'}')",
            code="unsupported_media_type",
        )


def same_origin(origin: str | None) -> bool:
    """Tell whether an Origin header, if sent, names this server: its scheme as well as its host and port."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme == request.scheme and parts.netloc == request.host


def key_id(key: str) -> str:
    """Return an opaque id for a key: without the app's secret, nothing about the key can be learnt from it."""
    secret = str(current_app.secret_key).encode()
    return hmac.new(secret, b"palaver-key\0" + key.encode(), hashlib.sha256).hexdigest()[:32]


def caller_id() -> str:
    """Return who the request counts against: its person, its API key (sent or signed in), else its address."""
    person = request_person() if request.endpoint not in PROBE_ENDPOINTS else None
    if person is not None:
        return person.owner
    key = sent_key_id() or signed_in_key_id()
    return f"key:{key}" if key else f"address:{request.remote_addr}"


def sent_key() -> str | None:
    """Return the API key the request sends: as OpenAI's clients do (a bearer token), or as Anthropic's (x-api-key)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-Api-Key", "").strip() or None


def sent_key_id() -> str | None:
    """Return the id of the valid API key the request sends, if any."""
    token = sent_key()
    if token is None:
        return None
    keys = services().settings.api_key_list
    if any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
        return key_id(token)
    return None


def signed_in_key_id() -> str | None:
    """Return the key id of this browser's sign-in, if current and its key still configured; never with accounts."""
    mark = session.get("sign_in")
    if (
        accounts_on()  # people sign in to the page as themselves; an operator's key is for its clients
        or not isinstance(mark, dict)
        or not isinstance(mark.get("key"), str)
        or not isinstance(mark.get("until"), (int, float))
        or mark["until"] < time.time()
    ):
        return None
    keys = services().settings.api_key_list
    return mark["key"] if any(hmac.compare_digest(mark["key"], key_id(key)) for key in keys) else None


def sign_in(key: str) -> None:
    """Check a key typed into the page, throttling failures per address; remember a success in the session."""
    rate_limits, address = services().limits, request.remote_addr or "unknown"
    rate_limits.check_sign_in(address)
    keys = services().settings.api_key_list
    if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        rate_limits.failed_sign_in(address)
        raise Unauthorized("that key is not valid", param="key", code="invalid_api_key")
    ttl = services().settings.sign_in_ttl
    session["sign_in"] = {"key": key_id(key), "until": int(time.time()) + ttl}
    session.permanent = True


def keys_required() -> bool:
    return bool(services().settings.api_key_list)


def accounts_on() -> bool:
    """Tell whether people sign in as themselves (PALAVER_AUTH is not none)."""
    return services().settings.auth != "none"


def request_person() -> Person | None:
    """Return the person a request acts for, by the key it sends or else its session: active, or pending approval.

    None without accounts, for an operator's key (PALAVER_API_KEYS), and for nobody.
    """
    if not accounts_on() or sent_key_id() is not None:
        return None
    return person_of_request(sent_key())


def require_person() -> Person | None:
    """With accounts, return the approved person a request acts for, None for an operator's key; refuse anyone else."""
    if sent_key_id() is not None:
        return None
    person = request_person()
    if person is None:
        raise Unauthorized(
            "sign in, or send a valid API key: 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            code="invalid_api_key",
        )
    if not person.active:
        raise Forbidden("your account waits for an admin's approval", code="awaiting_approval")
    return person


def require_admin() -> None:
    """With accounts, refuse anyone but an admin or an operator's key."""
    person = require_person()
    if person is not None and not person.admin:
        raise Forbidden("only an admin may do this", code="admin_only")


def require_api_key() -> None:
    """Refuse the request unless keys are off or it sends a valid key; with accounts, unless a person sends it."""
    if accounts_on():
        require_person()
        return
    if keys_required() and sent_key_id() is None:
        raise Unauthorized(
            "a valid API key is required: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            code="invalid_api_key",
        )


def require_sign_in() -> None:
    """Refuse a page request unless keys are off, the browser has signed in, or it sends a key."""
    if accounts_on():
        require_person()
        return
    if (
        keys_required()
        and request.endpoint != "pages.enter_key"
        and signed_in_key_id() is None
        and sent_key_id() is None
    ):
        raise Unauthorized("enter an access key to use this chat", code="invalid_api_key")


def add_security_headers(response: Response) -> Response:
    """Forbid sniffing, framing and cross-site referrers everywhere, and inline script on pages."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response
