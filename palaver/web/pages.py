"""The chat page and the form endpoint it posts to (which curl can use too)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing
from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for

from palaver.conversations import ChatTurn
from palaver.errors import PalaverError, PayloadTooLarge, Unauthorized
from palaver.types import final
from palaver.web.boundary import (
    client_gone_probe,
    event_stream,
    get_chat,
    get_engine,
    get_settings,
    guarded,
    json_error,
    sse_event,
    to_palaver_error,
)
from palaver.web.owners import current_owner
from palaver.web.protocol import ChatResponse, FormChatRequest
from palaver.web.security import require_sign_in, sign_in

pages = Blueprint("pages", __name__)


def wants(mimetype: str) -> bool:
    """Tell whether the page's script asked for mimetype rather than the HTML page."""
    return request.accept_mimetypes.best_match(["text/html", mimetype]) == mimetype


pages.before_request(require_sign_in)


def render_chat(error: PalaverError | None = None, draft: str = ""):
    """Render the chat page with this session's conversation."""
    engine = get_engine()
    conversation_id = session.get("conversation_id")
    conversation = get_chat().store.get(conversation_id, current_owner()) if conversation_id else None
    preset = engine.presets.get(conversation.preset if conversation and conversation.preset else session.get("preset"))
    return render_template(
        "chat.html",
        messages=list(conversation.messages) if conversation else [],
        error=error,
        draft=draft,
        max_chars=get_settings().max_message_chars,
        model=engine.describe(),
        presets=list(engine.presets),
        preset=preset,
    )


@pages.get("/")
def index():
    current_owner(create=True)  # the browser gets its id on its first visit, for the API calls it makes too
    return render_chat()


@pages.post("/")
def send():
    fields = {
        "preset": session.get("preset"),
        **request.form.to_dict(),
        "conversation_id": session.get("conversation_id"),
    }
    settings = get_settings()
    chat_input = FormChatRequest.from_form(fields, settings).to_input(settings)
    chat, owner = get_chat(), current_owner(create=True)
    conversation_id = chat.resolve(chat_input.conversation_id, owner, restart_unknown=True)
    session["conversation_id"] = conversation_id
    session.permanent = True
    items = chat.stream(conversation_id, chat_input, owner, client_gone_probe())
    next(items)  # errors found before any text keep their status
    if wants("text/event-stream"):
        return event_stream(page_events(items))
    turn = final(items, ChatTurn)
    return ChatResponse.of(turn).model_dump() if wants("application/json") else render_chat()


def page_events(items: Generator[Any, None, None]) -> Iterator[str]:
    """Frame a reply for the page's script: text deltas, then the finished turn or an error."""
    with closing(items):  # the browser's Stop closes the connection, which cancels the generation
        for item in guarded(items):
            if isinstance(item, str):
                yield sse_event({"delta": item})
            elif isinstance(item, ChatTurn):
                yield sse_event({"done": True, **ChatResponse.of(item).model_dump()})
            else:
                yield sse_event(item.as_dict())


@pages.post("/stop")
def stop():
    return {"stopped": get_chat().cancel(session.get("conversation_id"), current_owner())}


@pages.post("/new")
def new_conversation():
    preset = request.form.get("preset") or None
    get_engine().presets.get(preset, param="preset")  # refuse an unknown preset before starting over
    session.pop("conversation_id", None)  # the previous one stays in the owner's list until deleted or expired
    session["preset"] = preset
    return redirect(url_for("pages.index"), code=303)


@pages.post("/key")
def enter_key():
    sign_in(request.form.get("key", ""))
    return redirect(url_for("pages.index"), code=303)


@pages.errorhandler(Exception)
def page_error(exc: Exception):
    error = to_palaver_error(exc)
    if wants("application/json") or wants("text/event-stream"):
        return json_error(error)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    if isinstance(error, Unauthorized) or request.endpoint == "pages.enter_key":  # never the chat before sign-in
        shown = error if request.method == "POST" else None
        return render_template("key.html", error=shown), error.status, headers
    # Give the user back what they typed, unless the body was too large to read.
    draft = "" if isinstance(error, PayloadTooLarge) else request.form.get("textbox", "")
    return render_chat(error, draft), error.status, headers
