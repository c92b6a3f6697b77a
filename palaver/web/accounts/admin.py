"""The admin's pages: people (approved, disabled, deleted, made admins), groups, quotas, and usage per model."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request, url_for

from palaver.core.errors import Forbidden, InvalidRequest, NotFound
from palaver.storage.quotas import LIMITS, Quota
from palaver.web.accounts.guards import active_person, refusal_page
from palaver.web.accounts.identity import people
from palaver.web.errors import to_palaver_error
from palaver.web.services import services

admin = Blueprint("admin", __name__, url_prefix="/admin")
SUBJECT_KINDS = ("person", "group")


@admin.before_request
def require_admin_person() -> None:
    if not active_person().admin:
        raise Forbidden("only an admin may see this page", code="admin_only")


@admin.after_request
def never_stored(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def quota_store():
    return services().quotas.store


@admin.get("/people")
def list_people():
    return render_template(
        "admin_people.html", people=people().everyone(), me=active_person(), quotas=quota_store().everything()
    )


@admin.get("/people/<person_id>")
def person_page(person_id: str):
    return render_person(person_id)


def render_person(person_id: str, temporary_password: str = ""):
    person = people().get(person_id)
    if person is None:
        raise NotFound("there is no such person")
    keys = people().keys.of(person_id)
    return render_template("admin_person.html", person=person, keys=keys, temporary_password=temporary_password)


@admin.post("/people/<person_id>/reset-password")
def reset_password(person_id: str):
    """Give a password account a random temporary password, shown this once, and end all its sessions."""
    temporary_password = people().reset_password(person_id)
    if temporary_password is None:
        raise NotFound("there is no such person who signs in with a password")
    return render_person(person_id, temporary_password)


@admin.post("/people/<person_id>/keys/<key_id>/revoke")
def revoke_key(person_id: str, key_id: str):
    if not people().keys.revoke(person_id, key_id):
        raise NotFound("that person has no such key, or it is revoked already")
    return redirect(url_for("admin.person_page", person_id=person_id), code=303)


@admin.post("/people/<person_id>/approve")
def approve(person_id: str):
    """Let a person in: one waiting for approval, or one disabled before."""
    if not people().set_state(person_id, "active"):
        raise NotFound("there is no such person")
    return redirect(url_for("admin.list_people"), code=303)


@admin.post("/people/<person_id>/disable")
def disable(person_id: str):
    """Keep a person out: their sessions end and their keys stop working at once."""
    not_myself(person_id, "disable")
    if not people().set_state(person_id, "disabled"):
        raise NotFound("there is no such person")
    return redirect(url_for("admin.list_people"), code=303)


@admin.post("/people/<person_id>/role")
def set_role(person_id: str):
    """Make a person an admin, or an admin a member again."""
    not_myself(person_id, "change the role of")
    if not people().set_role(person_id, request.form.get("role", "")):
        raise NotFound("there is no such person")
    return redirect(url_for("admin.list_people"), code=303)


@admin.post("/people/<person_id>/delete")
def delete(person_id: str):
    """Delete a person with everything they own: conversations, shares, keys, sessions, usage, quota."""
    not_myself(person_id, "delete")
    if not people().delete(person_id):
        raise NotFound("there is no such person")
    return redirect(url_for("admin.list_people"), code=303)


def not_myself(person_id: str, action: str) -> None:
    if person_id == active_person().id:  # an admin always remains
        raise InvalidRequest(f"you cannot {action} your own account", param="person_id")


@admin.get("/groups")
def list_groups():
    everyone = people().everyone()
    return render_template(
        "admin_groups.html",
        groups=quota_store().groups.everything(),
        people=everyone,
        logins={person.id: person.login for person in everyone},
        quotas=quota_store().everything(),
    )


@admin.post("/groups")
def create_group():
    quota_store().groups.create(request.form.get("name", ""))
    return redirect(url_for("admin.list_groups"), code=303)


@admin.post("/groups/<group_id>/rename")
def rename_group(group_id: str):
    if not quota_store().groups.rename(group_id, request.form.get("name", "")):
        raise NotFound("there is no such group")
    return redirect(url_for("admin.list_groups"), code=303)


@admin.post("/groups/<group_id>/delete")
def delete_group(group_id: str):
    """Delete a group and its quota; its members stay, without it."""
    if not quota_store().groups.delete(group_id):
        raise NotFound("there is no such group")
    return redirect(url_for("admin.list_groups"), code=303)


@admin.post("/groups/<group_id>/members")
def add_member(group_id: str):
    if not quota_store().groups.add(group_id, request.form.get("person_id", "")):
        raise NotFound("there is no such group or person")
    return redirect(url_for("admin.list_groups"), code=303)


@admin.post("/groups/<group_id>/members/<person_id>/remove")
def remove_member(group_id: str, person_id: str):
    if not quota_store().groups.remove(group_id, person_id):
        raise NotFound("that person is not in that group")
    return redirect(url_for("admin.list_groups"), code=303)


def subject_name(kind: str, subject_id: str) -> str:
    """Return the login of a person or the name of a group a quota is for, or refuse an unknown one."""
    named = people().get(subject_id) if kind == "person" else quota_store().groups.get(subject_id)
    if kind not in SUBJECT_KINDS or named is None:
        raise NotFound(f"there is no such {kind if kind in SUBJECT_KINDS else 'person or group'}")
    return named.login if kind == "person" else named.name


@admin.get("/quotas/<kind>/<subject_id>")
def quota_page(kind: str, subject_id: str):
    return render_quota(kind, subject_id)


def render_quota(kind: str, subject_id: str, error=None, status: int = 200):
    name, subject = subject_name(kind, subject_id), f"{kind}:{subject_id}"
    quota = quota_store().of(subject) or Quota()
    effective = quota_store().effective(subject_id) if kind == "person" else None
    page = render_template(
        "admin_quota.html",
        kind=kind,
        subject_id=subject_id,
        name=name,
        quota=quota,
        effective=effective,
        models=services().backend.names,
        error=error,
    )
    return page, status


@admin.post("/quotas/<kind>/<subject_id>")
def set_quota(kind: str, subject_id: str):
    """Set a person's or a group's quota from the form: an empty field is no limit of that kind."""
    subject_name(kind, subject_id)
    quota_store().set(f"{kind}:{subject_id}", quota_of_form())
    return redirect(url_for("admin.list_people" if kind == "person" else "admin.list_groups"), code=303)


def quota_of_form() -> Quota:
    """Read a quota from the form: whole numbers or empty, and the models allowed if only some are."""
    limits: dict[str, int | None] = {}
    for kind in LIMITS:
        given = request.form.get(kind, "").strip().replace(",", "").replace("_", "")
        if given and not given.isdigit():
            raise InvalidRequest(f"'{kind}' must be a whole number, or empty for no limit", param=kind)
        limits[kind] = int(given) if given else None
    models = None
    if request.form.get("some_models"):
        known = services().backend.names
        models = tuple(name for name in request.form.getlist("models") if name in known)
    return Quota(**limits, models=models)


@admin.get("/usage")
def usage():
    """Show what each person spent today and this month, per model."""
    logins = {person.id: person.login for person in people().everyone()}
    return render_template("admin_usage.html", spent=quota_store().usage.report(), logins=logins)


@admin.errorhandler(Exception)
def admin_error(exc: Exception):
    error = to_palaver_error(exc)
    refusal = refusal_page(error)
    if refusal is not None:
        return refusal
    if request.endpoint == "admin.set_quota" and isinstance(error, InvalidRequest) and request.view_args:
        return render_quota(request.view_args["kind"], request.view_args["subject_id"], error, error.status)
    return render_template("error.html", error=error), error.status
