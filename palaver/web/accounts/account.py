"""A person's own page: who they are, their API keys, signing out here or everywhere, their browser's conversations."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request, session, url_for

from palaver.core.errors import InvalidRequest, NotFound
from palaver.storage.records import Person, PersonKey
from palaver.web.accounts.guards import active_person, refusal_page, safe_next, sign_in_url
from palaver.web.accounts.identity import BROWSER_OWNER, people, sign_out, sign_out_everywhere
from palaver.web.errors import to_palaver_error
from palaver.web.owners import BROWSER_ID
from palaver.web.services import services

account = Blueprint("account", __name__)

OPEN_TO_ANYONE = {"account.sign_out_here"}  # a person waiting for approval may sign out, and so may nobody


@account.before_request
def require_account() -> None:
    if request.endpoint not in OPEN_TO_ANYONE:
        active_person()


@account.after_request
def never_stored(response: Response) -> Response:
    """Keep these pages (a new key's secret among them) out of every cache."""
    response.headers["Cache-Control"] = "no-store"
    return response


def claimable_owner() -> str | None:
    """Return the owner this browser's own conversations carry, if it has any to offer to the person signed in."""
    browser = session.get(BROWSER_OWNER)
    if not isinstance(browser, str) or not BROWSER_ID.fullmatch(browser):
        return None
    owner = f"browser:{browser}"
    return owner if services().chat.store.count_owned(owner) else None


def render_account(person: Person, error=None, new_key: PersonKey | None = None, secret: str = "", status: int = 200):
    store, claimable, quotas = services().chat.store, claimable_owner(), services().quotas.store
    return (
        render_template(
            "account.html",
            person=person,
            quota=quotas.effective(person.id),
            spent=quotas.usage.report(person.id),
            keys=people().keys.of(person.id),
            sessions=people().sessions.count(person.id),
            claimable=store.count_owned(claimable) if claimable else 0,
            error=error,
            new_key=new_key,
            secret=secret,
        ),
        status,
    )


@account.get("/account")
def index():
    return render_account(active_person())


@account.post("/account/keys")
def create_key():
    """Create a named key and show its secret, this once."""
    person = active_person()
    key, secret = people().keys.create(person.id, request.form.get("name", ""))
    return render_account(person, new_key=key, secret=secret, status=201)


@account.post("/account/keys/<key_id>/revoke")
def revoke_key(key_id: str):
    if not people().keys.revoke(active_person().id, key_id):
        raise NotFound("you have no such key, or it is revoked already")
    return redirect(url_for("account.index"), code=303)


@account.post("/sign-out")
def sign_out_here():
    sign_out()
    return redirect(sign_in_url() or url_for("pages.index"), code=303)


@account.post("/account/sign-out-everywhere")
def sign_out_all():
    """End every session of the person, on every browser and device; their keys go on working."""
    sign_out_everywhere(active_person())
    return redirect(sign_in_url() or url_for("pages.index"), code=303)


@account.get("/account/claim")
def claim_offer():
    """Offer the browser's own conversations to the person, or go on if it has none."""
    owner = claimable_owner()
    if owner is None:
        return redirect(safe_next(request.args.get("next")), code=303)
    count = services().chat.store.count_owned(owner)
    return render_template("claim.html", count=count, next=request.args.get("next", ""))


@account.post("/account/claim")
def claim():
    """Add the browser's own conversations to the person's: those its signed cookie owns, and no others."""
    person, owner = active_person(), claimable_owner()
    if owner is not None:
        services().chat.store.transfer(owner, person.owner)
    return redirect(safe_next(request.form.get("next")), code=303)


@account.errorhandler(Exception)
def account_error(exc: Exception):
    error = to_palaver_error(exc)
    refusal = refusal_page(error)
    if refusal is not None:
        return refusal
    if request.endpoint == "account.create_key" and isinstance(error, InvalidRequest):
        return render_account(active_person(), error=error, status=error.status)
    return render_template("error.html", error=error), error.status
