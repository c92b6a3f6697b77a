"""The model library's page: the models pulled, a pull with its progress streamed, and removal; for key holders.

Pulling fills the disk and removing takes a model away, so the page is there only with PALAVER_API_KEYS set, behind
the page's key sign-in, or with accounts (PALAVER_AUTH) for admins alone.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from flask import Blueprint, redirect, render_template, request, url_for

from palaver.core.errors import ConfigurationError, ConversationBusy, Forbidden, InvalidRequest, Unauthorized
from palaver.core.hub_sources import HubSource, is_hub_source
from palaver.models.library import named, remove
from palaver.models.listing import SUGGESTED, library_rows
from palaver.models.progress import Progress
from palaver.web.accounts.guards import refusal_page
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.security import accounts_on, keys_required, require_admin, require_sign_in
from palaver.web.services import services
from palaver.web.sse import event_stream, sse_event

library = Blueprint("library", __name__, url_prefix="/models")


def wants(mimetype: str) -> bool:
    return request.accept_mimetypes.best_match(["text/html", mimetype]) == mimetype


@library.before_request
def require_key_holder() -> None:
    """Open the library to admins with accounts; without, refuse it outright without API keys, else ask for one."""
    if accounts_on():
        require_admin()
        return
    if not keys_required():
        raise Forbidden(
            "the model library is open only with PALAVER_API_KEYS set: pulling fills the disk and removing takes "
            "models away, so anonymous visitors may do neither",
            code="library_needs_keys",
        )
    require_sign_in()


def served_sources() -> set[str]:
    """Return the Hub sources this server serves, as the library writes them."""
    return {str(HubSource.parse(e.source)) for e in services().backend.entries if is_hub_source(e.source)}


def render_library(error=None, status: int = 200):
    app = services()
    return (
        render_template(
            "library.html",
            rows=library_rows(app.settings),
            pulls=app.pulls.states(),
            suggested=SUGGESTED,
            served=served_sources(),
            error=error,
            when=lambda moment: datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M"),
        ),
        status,
    )


@library.get("", strict_slashes=False)
def index():
    return render_library()


def start_pull(source: str) -> Progress:
    """Start pulling source in the background (or follow its pull running already); a bad source is a 400."""
    try:
        return services().pulls.start(source.strip())
    except ConfigurationError as exc:
        raise InvalidRequest(str(exc), param="source") from None


@library.post("/pull")
def pull():
    """Pull a model from the Hub on a thread of its own: its progress streamed to the page, or the page again."""
    progress = start_pull(request.form.get("source", ""))
    if wants("text/event-stream"):
        return event_stream(sse_event(asdict(state)) for state in progress.follow())
    return redirect(url_for("library.index"), code=303)


@library.post("/remove")
def remove_model():
    """Remove a pulled model, unless this server serves it."""
    settings = services().settings
    try:
        model = named(settings.cache_dir, request.form.get("name", ""))
    except ConfigurationError as exc:
        raise InvalidRequest(str(exc), param="name") from None
    if model.source in served_sources():
        raise ConversationBusy(
            f"this server serves {model.name}: take it out of PALAVER_MODEL or PALAVER_MODELS first", param="name"
        )
    remove(settings.cache_dir, model)
    return redirect(url_for("library.index"), code=303)


@library.errorhandler(Exception)
def library_error(exc: Exception):
    error = to_palaver_error(exc)
    if wants("application/json") or wants("text/event-stream"):
        return json_error(error)
    refusal = refusal_page(error)
    if refusal is not None:
        return refusal
    if isinstance(error, Unauthorized):
        return render_template("key.html", error=error if request.method == "POST" else None), error.status
    if isinstance(error, Forbidden):
        return render_template("error.html", error=error), error.status
    return render_library(error, error.status)
