"""The chat page and the form endpoint it posts to (which curl can use too)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for

from errors import PalaverError, PayloadTooLarge
from conversations import ChatInput
from services import get_chat, get_engine, get_settings, json_error, to_palaver_error

pages = Blueprint("pages", __name__)


def wants_json() -> bool:
    """Tell whether the page's script, rather than a browser form or curl, sent this request."""
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def render_chat(error: PalaverError | None = None, draft: str = ""):
    """Render the chat page with this session's conversation."""
    return render_template(
        "chat.html", messages=get_chat().history(session.get("conversation_id")), error=error, draft=draft,
        max_chars=get_settings().max_message_chars, model=get_engine().describe())


@pages.get("/")
def index():
    return render_chat()


@pages.post("/")
def send():
    fields = {**request.form.to_dict(), "conversation_id": session.get("conversation_id")}
    chat_input = ChatInput.parse(fields, get_settings(), message_field="textbox", from_text=True)
    turn = get_chat().send(chat_input, restart_unknown=True)
    session["conversation_id"] = turn.conversation_id
    session.permanent = True
    return turn.as_dict() if wants_json() else render_chat()


@pages.post("/new")
def new_conversation():
    conversation_id = session.pop("conversation_id", None)
    if conversation_id:
        get_chat().store.delete(conversation_id)
    return redirect(url_for("pages.index"), code=303)


@pages.errorhandler(Exception)
def page_error(exc: Exception):
    error = to_palaver_error(exc)
    if wants_json():
        return json_error(error)
    # Give the user back what they typed, unless the body was too large to read.
    draft = "" if isinstance(error, PayloadTooLarge) else request.form.get("textbox", "")
    response = render_chat(error, draft)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    return response, error.status, headers
