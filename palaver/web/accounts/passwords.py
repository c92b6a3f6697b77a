"""Sign-up and sign-in with a password (PALAVER_AUTH=accounts): forms that work without JavaScript."""

from __future__ import annotations

import re

from flask import Blueprint, redirect, render_template, request, url_for

from palaver.core.errors import InvalidRequest, RateLimited, Unauthorized
from palaver.web.accounts.account import claimable_owner
from palaver.web.accounts.guards import safe_next
from palaver.web.accounts.identity import people, sign_person_in
from palaver.web.errors import to_palaver_error
from palaver.web.services import services

passwords = Blueprint("passwords", __name__)

LOGIN = re.compile(r"[\w.+\-@]{2,100}")  # an email address or a user name
MIN_PASSWORD, MAX_PASSWORD = 8, 1000  # long passphrases welcome; no rules on which characters


def checked_login(login: str) -> str:
    login = login.strip().lower()
    if not LOGIN.fullmatch(login):
        raise InvalidRequest(
            "a login is an email address or a user name: 2 to 100 letters, digits and . _ - + @", param="login"
        )
    return login


def checked_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", param="password")
    return password


def client_address() -> str:
    return request.remote_addr or "unknown"


@passwords.get("/sign-up")
def sign_up_page():
    return render_form("sign_up.html")


@passwords.post("/sign-up")
def sign_up():
    """Create an account and sign it in: the first one is the admin; later ones wait for approval unless open."""
    limits = services().limits
    limits.check_sign_in(client_address())
    login, password = checked_login(request.form.get("login", "")), checked_password(request.form.get("password", ""))
    limits.failed_sign_in(client_address())  # each sign-up costs a password hash, as a failed sign-in does
    person = people().create(
        login, password, display_name=request.form.get("display_name", ""), open_signup=services().settings.open_signup
    )
    sign_person_in(person)
    return redirect(url_for("pages.index"), code=303)


@passwords.get("/sign-in")
def sign_in_page():
    return render_form("sign_in.html")


@passwords.post("/sign-in")
def sign_in():
    """Check a login and password (throttled per address, locked per account); sign the browser in anew."""
    limits = services().limits
    limits.check_sign_in(client_address())
    try:
        person = people().authenticate(request.form.get("login", ""), request.form.get("password", ""))
    except (Unauthorized, RateLimited):
        limits.failed_sign_in(client_address())
        raise
    sign_person_in(person)
    if claimable_owner() is not None:  # offered, never taken unasked
        return redirect(url_for("account.claim_offer", next=request.form.get("next") or None), code=303)
    return redirect(safe_next(request.form.get("next")), code=303)


def render_form(template: str, error=None):
    """Render a sign-up or sign-in form, with what was typed but the password, and the page to go on to."""
    settings = services().settings
    return render_template(
        template,
        error=error,
        login=request.form.get("login", ""),
        display_name=request.form.get("display_name", ""),
        next=request.values.get("next", ""),
        open_signup=settings.open_signup,
    )


@passwords.errorhandler(Exception)
def form_error(exc: Exception):
    error = to_palaver_error(exc)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    template = "sign_up.html" if request.endpoint == "passwords.sign_up" else "sign_in.html"
    return render_form(template, error), error.status, headers
