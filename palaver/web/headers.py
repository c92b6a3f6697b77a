"""The security headers every answer carries, whoever writes it: the app, the HTTP worker's poller, or gunicorn."""

from __future__ import annotations

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def header_lines(content_type: str | None = None) -> bytes:
    """Return the security headers as raw HTTP/1.1 lines, with the page policy for HTML."""
    headers = dict(SECURITY_HEADERS)
    if content_type == "text/html":
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items())
