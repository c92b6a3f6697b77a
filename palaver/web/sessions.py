"""The session cookie: its signing key, kept once in the cache directory, and Secure over https."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from palaver.core.config import Settings

log = logging.getLogger("palaver")


class SessionsSecureOverHttps(SecureCookieSessionInterface):
    """Mark the session cookie Secure whenever the request came over https, as a trusted proxy reports it."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


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
    # Written whole under a name of its own, then linked into place: when workers race, the first link wins, and
    # no worker ever reads a key file that is still empty.
    descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=".secret_key-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key)
        os.link(written, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        os.unlink(written)
    log.info("generated a session secret key in %s", path)
    return key
