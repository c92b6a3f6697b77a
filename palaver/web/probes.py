"""Health probes: what /healthz and /readyz say, answered by the HTTP worker's poller without a request thread.

A platform restarts a dyno whose probe times out, so a probe must never wait behind requests, rate limits or a
Host check. The app factory installs the answer once; the poller calls it for a bodiless GET or HEAD.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from palaver.web.headers import header_lines

log = logging.getLogger("palaver")

PROBE_PATHS = ("/healthz", "/readyz")
Describe = Callable[[], dict]
_describe: Describe | None = None


def install(describe: Describe) -> None:
    """Answer /readyz from describe(), a backend's non-blocking description of its state."""
    global _describe
    _describe = describe


def health(describe: Describe, path: str) -> tuple[int, dict]:
    """Return the status and body for a probe path."""
    if path == "/healthz":
        return 200, {"status": "ok"}
    description = describe()
    return (200 if description["state"] == "ready" else 503), description


def raw_answer(path: str, method: bytes, keep_alive: bool) -> bytes | None:
    """Return a whole HTTP/1.1 answer for a probe, or None when path is not a probe or none is installed."""
    if path not in PROBE_PATHS or _describe is None:
        return None
    try:
        status, payload = health(_describe, path)
        body = json.dumps(payload).encode()
    except Exception:  # the poller must go on whatever a description does
        log.exception("answering %s failed", path)
        status, body = 500, b'{"status": "error"}'
    reason = {200: b"OK", 503: b"Service Unavailable"}.get(status, b"Internal Server Error")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nCache-Control: no-store\r\n" % (
        status,
        reason,
        len(body),
    )
    head += header_lines() + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n"
    return head + (b"" if method == b"HEAD" else body)
