"""The web layer's defences: API keys and page sign-in, rate limits, cross-site and host checks, headers."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from urllib.parse import urlsplit

import limits
from flask import Flask, Response, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import host_is_trusted

from palaver.config import Settings
from palaver.errors import (
    ConfigurationError,
    Forbidden,
    InvalidRequest,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from palaver.web.headers import CONTENT_SECURITY_POLICY, SECURITY_HEADERS

log = logging.getLogger("palaver")

# Routes that run the model: keys guard them all, and the token budget applies to them.
GENERATING_ENDPOINTS = {
    "pages.send",
    "pages.send_in",
    "api.chat",
    "v1.chat_completions",
    "v1.completions",
    "mlflow.invocations",
}
# Constant answers for a platform's probes: no host check, no key, no rate limit.
PROBE_ENDPOINTS = {"health.probe", "mlflow.ping", "static"}
JSON_BODY_BLUEPRINTS = {"v1": ("application/json",), "mlflow": ("application/json", "text/csv", "application/csv")}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class SessionsSecureOverHttps(SecureCookieSessionInterface):
    """Mark the session cookie Secure whenever the request came over https, as a trusted proxy reports it."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


class RateLimits:
    """Count requests and generated tokens per caller in fixed one-window buckets, shared by all threads."""

    def __init__(self, settings: Settings):
        try:
            self.strategy = FixedWindowRateLimiter(storage_from_string(settings.rate_limit_storage))
            self.requests = limits.parse(settings.rate_limit) if settings.rate_limit else None
            self.tokens = limits.parse(settings.token_rate_limit) if settings.token_rate_limit else None
            self.sign_ins = limits.parse(settings.sign_in_attempts)
        except (ValueError, limits.errors.ConfigurationError) as exc:
            raise ConfigurationError(f"rate limits: {exc}") from None
        self._settler = ThreadPoolExecutor(1, thread_name_prefix="palaver-budget")

    def count_request(self, caller: str) -> None:
        """Count one request, or refuse it once the caller's budget is spent."""
        if self.requests is not None and not self.strategy.hit(self.requests, "requests", caller):
            raise self._refusal(self.requests, "requests", caller, "requests")

    def check_tokens(self, caller: str) -> None:
        """Refuse a generation at once while the caller's token budget for this window is spent."""
        if self.tokens is not None and not self.strategy.test(self.tokens, "tokens", caller):
            raise self._refusal(self.tokens, "tokens", caller, "generated tokens")

    def reserve_tokens(self, caller: str, most: int) -> Callable[[int], None]:
        """Take up to most tokens of the caller's budget now, or refuse; return the call that settles the real count.

        Reserving at admission is what makes the budget hold when many requests arrive at once: each one's
        reservation is counted before the next is checked, not charged after all of them have run.
        """
        limit = self.tokens
        if limit is None:
            return lambda used: None
        reserved = max(1, min(most, limit.amount))
        key, storage = limit.key_for("tokens", caller), self.strategy.storage
        if storage.incr(key, limit.get_expiry(), amount=reserved) > limit.amount:
            storage.incr(key, limit.get_expiry(), amount=-reserved)
            raise self._refusal(limit, "tokens", caller, f"generated tokens (this request reserves {reserved})")
        window = storage.get_expiry(key)

        def settle(used: int) -> None:
            # Off the engine thread that finishes the row: a shared counter store is a network call away.
            self._settler.submit(self._settle, key, reserved, used, window)

        return settle

    def _settle(self, key: str, reserved: int, used: int, window: float) -> None:
        """Charge a reply's overshoot in full; give back what it did not use, unless its window has passed."""
        assert self.tokens is not None  # only reservations settle
        storage, difference = self.strategy.storage, used - reserved
        try:
            if difference > 0 or (difference < 0 and storage.get_expiry(key) == window):
                storage.incr(key, self.tokens.get_expiry(), amount=difference)
        except Exception:  # a counter store that is down must not take the settler with it
            log.exception("settling a token reservation failed")

    def check_sign_in(self, address: str) -> None:
        """Refuse sign-in attempts from an address that has failed too often."""
        if not self.strategy.test(self.sign_ins, "sign-in", address):
            raise self._refusal(self.sign_ins, "sign-in", address, "failed sign-ins")

    def failed_sign_in(self, address: str) -> None:
        self.strategy.hit(self.sign_ins, "sign-in", address)

    def _refusal(self, limit, bucket: str, caller: str, what: str) -> RateLimited:
        reset_at = self.strategy.get_window_stats(limit, bucket, caller).reset_time
        wait = max(1, int(reset_at - time.time() + 0.999))
        return RateLimited(
            f"rate limit reached: at most {limit.amount} {what} per {limit.multiples} "
            f"{limit.GRANULARITY.name}; retry in {wait} seconds",
            retry_after=wait,
            code="rate_limit_exceeded",
        )


def init_app(app: Flask, settings: Settings) -> None:
    """Install the proxy fix, the session cookie rule, the request checks and the response headers."""
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    app.session_interface = SessionsSecureOverHttps()
    app.extensions["palaver"]["limits"] = RateLimits(settings)
    app.after_request(add_security_headers)


def get_limits() -> RateLimits:
    return current_app.extensions["palaver"]["limits"]


def refuse_foreign_requests() -> None:
    """Refuse other hosts (DNS rebinding), cross-site writes, and non-JSON bodies on the JSON-only APIs."""
    if request.endpoint in PROBE_ENDPOINTS:
        return
    if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and not request.environ.get("HTTP_HOST"):
        raise InvalidRequest("an HTTP/1.1 request must carry a Host header", code="host_missing")
    allowed = current_app.extensions["palaver"]["settings"].allowed_host_list
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
    if accepted and request.mimetype not in accepted:
        raise UnsupportedMediaType(
            f"the body must be sent as {' or '.join(accepted)} (got '{request.mimetype or 'no content type'}')",
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


def bearer_key_id() -> str | None:
    """Return the id of the valid API key in the Authorization header, if any."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    keys = current_app.extensions["palaver"]["settings"].api_key_list
    if any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
        return key_id(token)
    return None


def signed_in_key_id() -> str | None:
    """Return the key id of this browser's sign-in, if it is current and its key still configured."""
    mark = session.get("sign_in")
    if (
        not isinstance(mark, dict)
        or not isinstance(mark.get("key"), str)
        or not isinstance(mark.get("until"), (int, float))
        or mark["until"] < time.time()
    ):
        return None
    keys = current_app.extensions["palaver"]["settings"].api_key_list
    return mark["key"] if any(hmac.compare_digest(mark["key"], key_id(key)) for key in keys) else None


def sign_in(key: str) -> None:
    """Check a key typed into the page, throttling failures per address; remember a success in the session."""
    rate_limits, address = get_limits(), request.remote_addr or "unknown"
    rate_limits.check_sign_in(address)
    keys = current_app.extensions["palaver"]["settings"].api_key_list
    if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        rate_limits.failed_sign_in(address)
        raise Unauthorized("that key is not valid", param="key", code="invalid_api_key")
    ttl = current_app.extensions["palaver"]["settings"].sign_in_ttl
    session["sign_in"] = {"key": key_id(key), "until": int(time.time()) + ttl}
    session.permanent = True


def keys_required() -> bool:
    return bool(current_app.extensions["palaver"]["settings"].api_key_list)


def require_api_key() -> None:
    """Refuse the request unless keys are off or it carries a valid bearer key."""
    if keys_required() and bearer_key_id() is None:
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'", code="invalid_api_key")


def require_sign_in() -> None:
    """Refuse a page request unless keys are off, the browser has signed in, or it carries a bearer key."""
    if (
        keys_required()
        and request.endpoint != "pages.enter_key"
        and signed_in_key_id() is None
        and bearer_key_id() is None
    ):
        raise Unauthorized("enter an access key to use this chat", code="invalid_api_key")


def caller_id() -> str:
    """Return who the request counts against: its API key (bearer or signed in), else its client address."""
    key = bearer_key_id() or signed_in_key_id()
    return f"key:{key}" if key else f"address:{request.remote_addr}"


def apply_rate_limits() -> None:
    """Count the request against its caller's budgets; a generation's tokens are reserved when it is admitted."""
    if request.endpoint in PROBE_ENDPOINTS:
        return
    get_limits().count_request(g.caller)
    if request.endpoint in GENERATING_ENDPOINTS:
        get_limits().check_tokens(g.caller)


def token_reservation(caller: str) -> Callable[[int], Callable[[int], None]] | None:
    """Return how the caller's generations reserve tokens, or None without a token limit."""
    rate_limits = get_limits()
    return partial(rate_limits.reserve_tokens, caller) if rate_limits.tokens is not None else None


def add_security_headers(response: Response) -> Response:
    """Forbid sniffing, framing and cross-site referrers everywhere, and inline script on pages."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response
