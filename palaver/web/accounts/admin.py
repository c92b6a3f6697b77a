"""The admin's page of people: who is waiting for approval, approving them, and disabling an account at once."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, url_for

from palaver.core.errors import Forbidden, InvalidRequest, NotFound
from palaver.web.accounts.guards import active_person, refusal_page
from palaver.web.accounts.identity import people
from palaver.web.errors import to_palaver_error

admin = Blueprint("admin", __name__, url_prefix="/admin")


@admin.before_request
def require_admin_person() -> None:
    if not active_person().admin:
        raise Forbidden("only an admin may see this page", code="admin_only")


@admin.after_request
def never_stored(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@admin.get("/people")
def list_people():
    return render_template("admin_people.html", people=people().everyone(), me=active_person())


@admin.post("/people/<person_id>/approve")
def approve(person_id: str):
    """Let a person in: one waiting for approval, or one disabled before."""
    if not people().set_state(person_id, "active"):
        raise NotFound("there is no such person")
    return redirect(url_for("admin.list_people"), code=303)


@admin.post("/people/<person_id>/disable")
def disable(person_id: str):
    """Keep a person out: their sessions end and their keys stop working at once."""
    if person_id == active_person().id:
        raise InvalidRequest("you cannot disable your own account", param="person_id")
    if not people().set_state(person_id, "disabled"):
        raise NotFound("there is no such person")
    return redirect(url_for("admin.list_people"), code=303)


@admin.errorhandler(Exception)
def admin_error(exc: Exception):
    error = to_palaver_error(exc)
    refusal = refusal_page(error)
    if refusal is not None:
        return refusal
    return render_template("error.html", error=error), error.status
