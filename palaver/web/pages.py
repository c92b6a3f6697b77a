"""The chat page and the form endpoint it posts to (which curl can use too)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from typing import Any

from flask import Blueprint, get_template_attribute, redirect, render_template, request, session, url_for

from palaver.chat.conversations import ChatTurn
from palaver.core.errors import InvalidRequest, NotFound, PalaverError, Unauthorized
from palaver.core.types import ReasoningDelta, final
from palaver.storage.records import StoredConversation, StoredMessage
from palaver.web.accounts.guards import refusal_page
from palaver.web.api.listing import ConversationView, RenameRequest
from palaver.web.api.schemas import ChatResponse, FormChatRequest
from palaver.web.body import submitted_form
from palaver.web.connection import client_gone_probe
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.owners import current_owner
from palaver.web.security import require_sign_in, sign_in
from palaver.web.services import services
from palaver.web.sse import event_stream, guarded, sse_event

pages = Blueprint("pages", __name__)


def wants(mimetype: str) -> bool:
    """Tell whether the page's script asked for mimetype rather than the HTML page."""
    return request.accept_mimetypes.best_match(["text/html", mimetype]) == mimetype


pages.before_request(require_sign_in)


LISTED_CONVERSATIONS = 50
PAGE_TURNS = 50  # turns a page shows; earlier ones are a link away, so a long conversation loads as fast


def page_window(turns: int, before: int | None) -> range:
    """Return the turns a page shows: the PAGE_TURNS before the turn numbered before, or the latest."""
    end = turns if before is None else min(before, turns)
    return range(max(0, end - PAGE_TURNS), end)


PANEL_PARAMETERS = ("temperature", "max_new_tokens", "top_p")


def later_page(conversation: StoredConversation | None) -> str | None:
    """Return the address of the turns after those shown, or None when the page shows the latest."""
    if conversation is None:
        return None
    shown_end = conversation.first_turn + len(conversation.records) // 2
    if shown_end >= conversation.turns:
        return None
    before = shown_end + PAGE_TURNS
    if before >= conversation.turns:
        return url_for("pages.open_conversation", conversation_id=conversation.id)
    return url_for("pages.open_conversation", conversation_id=conversation.id, before=before)


def render_chat(
    conversation_id: str | None, error: PalaverError | None = None, draft: str = "", new_share: str | None = None
):
    """Render the chat page: the owner's conversations beside one of them (or a new one), its latest turns."""
    form = submitted_form()
    app, owner = services(), current_owner()
    engine, settings, store, presets = app.backend, app.settings, app.chat.store, app.presets
    asked = {name: request.args[name] for name in ("q", "before", "model") if name in request.args}  # others: no
    shown = ConversationView.parse(asked, from_text=True) if error is None else ConversationView()
    before = shown.before
    conversation = store.get(conversation_id, owner, partial(page_window, before=before)) if conversation_id else None
    query = shown.q
    listed = store.owned(owner, LISTED_CONVERSATIONS, matching=query, model=shown.model) if owner else []
    chosen_preset = form.get("preset") or (conversation.preset if conversation else session.get("preset"))
    preset = presets.by_name.get(chosen_preset or "", presets.default)
    path = url_for("pages.send_in", conversation_id=conversation.id) if conversation else url_for("pages.send")
    model = engine.describe()
    # From what the backend already knows: a page must never wait on the upstream to learn a name.
    served = model.get("name") or (settings.upstream_model if settings.backend == "openai" else settings.model_name)
    if len(engine.names) > 1:  # the name as configured, which requests use
        served = engine.default
    chat_models = [item for item in model["models"] if not item["embeds_only"]]  # a sentence encoder has no chat
    default_chat = chat_models[0]["name"] if chat_models else engine.default
    return render_template(
        "chat.html",
        conversation=conversation,
        records=conversation.records if conversation else [],
        later=later_page(conversation),
        conversations=listed,
        query=query or "",
        error=error,
        draft=draft,
        max_chars=settings.max_message_chars,
        model=model,
        models=model["models"],
        chat_models=chat_models,
        model_name=(conversation.model if conversation else None)
        or (served if len(engine.names) == 1 else default_chat),
        chosen_model=form.get("model") or default_chat,
        model_filter=shown.model or "",
        presets=list(presets),
        preset=preset,
        send_url=path,
        stop_url=f"{path}/stop" if conversation else url_for("pages.stop"),
        chosen={name: form.get(name, "") for name in PANEL_PARAMETERS},
        defaults={name: getattr(settings, name) for name in PANEL_PARAMETERS},
        share_links=store.share_links.listed(conversation.id, owner) if conversation else [],
        new_share=new_share,  # a link just made, shown this once: only its token's hash is stored
    )


def render_turn(turn: ChatTurn) -> str:
    """Render a finished turn as the page shows it after a reload, for the script to put in place."""
    message = get_template_attribute("_message.html", "message")
    usage, reply = turn.reply.usage, turn.reply
    now = datetime.now(UTC)
    question = StoredMessage(role="user", content=turn.user_text, created_at=now, prompt_tokens=usage.prompt_tokens)
    answer = StoredMessage(
        role="assistant",
        content=reply.text,
        created_at=now,
        completion_tokens=usage.completion_tokens,
        finish_reason=reply.finish_reason,
        seconds=turn.seconds,
        reasoning=reply.reasoning,
    )
    return str(message(question, turn.conversation_id, editable=True)) + str(
        message(answer, turn.conversation_id, question=question)
    )


@pages.get("/")
def index():
    current_owner(create=True)  # the browser gets its id on its first visit, for the API calls it makes too
    return render_chat(session.get("conversation_id"))


@pages.get("/c/<conversation:conversation_id>")
def open_conversation(conversation_id: str):
    """Open one of the owner's conversations at its own address; anyone else gets a 404."""
    if not services().chat.store.exists(conversation_id, current_owner(create=True)):
        raise NotFound("there is no conversation at this address, or it is not yours")
    session["conversation_id"] = conversation_id  # curl's POST / and the Stop of old pages continue it
    return render_chat(conversation_id)


@pages.post("/")
def send():
    """Send a message in the session's conversation, or start one: the form endpoint curl posts to."""
    return take_turn(session.get("conversation_id"), restart_unknown=True)


@pages.post("/c/<conversation:conversation_id>")
def send_in(conversation_id: str):
    """Send a message in the conversation at this address, which must be the owner's (resolve checks)."""
    return take_turn(conversation_id, restart_unknown=False)


def take_turn(conversation_id: str | None, restart_unknown: bool):
    fields = {"preset": session.get("preset"), **request.form.to_dict(), "conversation_id": conversation_id}
    settings = services().settings
    chat_input = FormChatRequest.from_form(fields, settings).to_input(settings)
    chat, owner = services().chat, current_owner(create=True)
    conversation_id = chat.resolve(chat_input.conversation_id, owner, restart_unknown=restart_unknown)
    session["conversation_id"] = conversation_id
    session.permanent = True
    items = chat.stream(conversation_id, chat_input, owner, client_gone_probe())
    next(items)  # errors found before any text keep their status
    if wants("text/event-stream"):
        return event_stream(page_events(items))
    turn = final(items, ChatTurn)
    return ChatResponse.of(turn).model_dump() if wants("application/json") else render_chat(conversation_id)


def page_events(items: Generator[Any, None, None]) -> Iterator[str]:
    """Frame a reply for the page's script: reasoning and text deltas, then the finished turn, rendered, or an error."""
    with closing(items):  # the browser's Stop closes the connection, which cancels the generation
        for item in guarded(items):
            if isinstance(item, str):
                yield sse_event({"delta": item})
            elif isinstance(item, ReasoningDelta):
                yield sse_event({"reasoning": item.text})
            elif isinstance(item, ChatTurn):
                yield sse_event({"done": True, **ChatResponse.of(item).model_dump(), "html": render_turn(item)})
            else:
                yield sse_event(item.as_dict())


@pages.post("/stop")
def stop():
    return {"stopped": services().chat.cancel(session.get("conversation_id"), current_owner())}


@pages.post("/c/<conversation:conversation_id>/stop")
def stop_in(conversation_id: str):
    return {"stopped": services().chat.cancel(conversation_id, current_owner())}


@pages.post("/c/<conversation:conversation_id>/rename")
def rename_conversation(conversation_id: str):
    title = RenameRequest.parse(request.form.to_dict(), from_text=True).title
    services().chat.rename(conversation_id, title, current_owner())
    return redirect(url_for("pages.open_conversation", conversation_id=conversation_id), code=303)


@pages.post("/c/<conversation:conversation_id>/delete")
def delete_conversation(conversation_id: str):
    if request.form.get("confirm") != "yes":
        raise InvalidRequest("'confirm' must be ticked to delete a conversation", param="confirm")
    services().chat.delete(conversation_id, current_owner())
    if session.get("conversation_id") == conversation_id:
        session.pop("conversation_id")
    return redirect(url_for("pages.index"), code=303)


@pages.post("/new")
def new_conversation():
    preset = request.form.get("preset") or None
    services().presets.get(preset, param="preset")  # refuse an unknown preset before starting over
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
    refusal = refusal_page(error)  # with accounts: to the sign-in page, or the waiting page
    if refusal is not None:
        return refusal
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    if isinstance(error, Unauthorized) or request.endpoint == "pages.enter_key":  # never the chat before sign-in
        shown = error if request.method == "POST" else None
        return render_template("key.html", error=shown), error.status, headers
    # Give the user back what they typed, unless the body was never read (refused first, or too large).
    draft = submitted_form().get("textbox", "")
    shown_id = request.view_args.get("conversation_id") if request.view_args and error.status != 404 else None
    return render_chat(shown_id or session.get("conversation_id"), error, draft), error.status, headers
