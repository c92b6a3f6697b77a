"""How pages answer with accounts: the person they are for, and a refusal as the sign-in or the waiting page."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from palaver.core.errors import PalaverError, Unauthorized
from palaver.storage.records import Person
from palaver.web.security import accounts_on, require_person
from palaver.web.services import services

# The page where each mode signs people in; a mode without one (a proxy signs them in) answers 401 instead.
SIGN_IN_ENDPOINTS = {"accounts": "passwords.sign_in", "oidc": "oidc.sign_in"}


def active_person() -> Person:
    """Return the approved person a page is for, or refuse: an operator's key is nobody's account."""
    person = require_person()
    if person is None:
        raise Unauthorized("sign in to see your account", code="invalid_api_key")
    return person


def sign_in_url(next_path: str | None = None) -> str | None:
    """Return where this mode signs people in, coming back to next_path after; None if it has no such page."""
    endpoint = SIGN_IN_ENDPOINTS.get(services().settings.auth)
    if endpoint is None:
        return None
    return url_for(endpoint, next=next_path) if next_path and next_path != "/" else url_for(endpoint)


def safe_next(target: str | None) -> str:
    """Return target if it is a path on this server (never another site's address), else the chat page."""
    # Browsers read a backslash as a slash and drop tabs and newlines: "/\\x" and "/\t/x" are "//x", another site.
    if not target or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    return target if "\\" not in target and target.isprintable() else url_for("pages.index")


def refusal_page(error: PalaverError):
    """Answer an account refusal on a page: nobody goes to sign in, a pending person to the waiting page.

    Return None for every other error, and without accounts.
    """
    if not accounts_on():
        return None
    if isinstance(error, Unauthorized):
        url = sign_in_url(request.full_path.rstrip("?") if request.method == "GET" else None)
        if url is not None:
            return redirect(url, code=303)
    if error.code == "awaiting_approval":
        return render_template("waiting.html", error=error), error.status
    return None
