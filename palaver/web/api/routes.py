"""The JSON API: chat, its published schema, the caller's conversations, and health checks."""

from __future__ import annotations

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from palaver.core.errors import NotFound
from palaver.web.api.export import ExportQuery, as_json, as_markdown
from palaver.web.api.listing import ConversationListQuery, ConversationPage, RenameRequest, encode_cursor
from palaver.web.api.schemas import ChatRequest, ChatResponse, chat_schema
from palaver.web.body import read_json
from palaver.web.connection import client_gone_probe
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.openai.request_schemas import ChatCompletionRequest, TextCompletionRequest
from palaver.web.owners import current_owner
from palaver.web.probes import health as health_answer
from palaver.web.security import accounts_on, require_admin, require_api_key
from palaver.web.services import services

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_api_key)
health = Blueprint("health", __name__)


@api.post("/chat")
def chat():
    settings = services().settings
    chat_input = ChatRequest.parse(read_json(), {"settings": settings}).to_input(settings)
    turn = services().chat.send(chat_input, current_owner(), client_gone=client_gone_probe())
    return ChatResponse.of(turn).model_dump()


@api.get("/conversations")
def list_conversations():
    query = ConversationListQuery.parse(request.args.to_dict(), from_text=True)
    owner = current_owner()  # a caller with neither key nor cookie owns nothing, so its list is empty
    store = services().chat.store
    found = store.owned(owner, query.limit + 1, query.after(), query.q, query.model) if owner else []
    shown = found[: query.limit]
    next_cursor = encode_cursor(shown[-1]) if len(found) > query.limit else None
    return ConversationPage(conversations=shown, next_cursor=next_cursor).model_dump(mode="json")


@api.get("/conversations/<conversation:conversation_id>")
def conversation(conversation_id: str):
    found = services().chat.find(conversation_id, current_owner())
    head = found.model_dump(mode="json", exclude={"records"})
    shown = [{**r.message.as_dict(), **({"reasoning": r.reasoning} if r.reasoning else {})} for r in found.records]
    return {**head, "messages": shown}


@api.patch("/conversations/<conversation:conversation_id>")
def rename_conversation(conversation_id: str):
    title = RenameRequest.parse(read_json()).title
    renamed = services().chat.rename(conversation_id, title, current_owner())
    return renamed.model_dump(mode="json", exclude={"records"})


@api.get("/conversations/<conversation:conversation_id>/export")
def export_conversation(conversation_id: str):
    kind = ExportQuery.parse(request.args.to_dict(), from_text=True).format
    found = services().chat.find(conversation_id, current_owner())
    if kind == "markdown":
        body, mimetype = as_markdown(found), "text/markdown"
    else:
        body, mimetype = as_json(found), "application/json"
    extension = "md" if kind == "markdown" else "json"
    disposition = f'attachment; filename="conversation-{found.id}.{extension}"'
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": disposition})


@api.delete("/conversations/<conversation:conversation_id>")
def forget_conversation(conversation_id: str):
    services().chat.delete(conversation_id, current_owner())
    return {"conversation_id": conversation_id, "deleted": True}


@api.post("/conversations/<conversation:conversation_id>/cancel")
def cancel_generation(conversation_id: str):
    owner = current_owner()
    services().chat.resolve(conversation_id, owner)  # a first turn still running counts: it can be stopped
    return {"conversation_id": conversation_id, "stopped": services().chat.cancel(conversation_id, owner)}


@api.get("/schema")
def schema():
    app = services()
    return {
        **chat_schema(app.settings),
        "openai": {  # /v1's requests, every field with its bounds and meaning
            "chat_completions": ChatCompletionRequest.model_json_schema(),
            "completions": TextCompletionRequest.model_json_schema(),
        },
        "presets": [preset.describe() for preset in app.presets],
        "model": app.backend.describe(),
    }


@api.errorhandler(Exception)
def api_error(exc: Exception):
    return json_error(to_palaver_error(exc))


@health.get("/healthz")
@health.get("/readyz")
def probe():
    """Answer a probe the poller did not (the Flask test client, another server): the same body and status."""
    status, body = health_answer(services().backend.describe, request.path)
    return body, status


@health.get("/metrics")
def metrics():
    if not services().settings.metrics:  # off unless asked for, as llama.cpp's server does
        raise NotFound("metrics are off; set PALAVER_METRICS=1 to serve them")
    if accounts_on():  # every person's and model's counts: the operator's, not each person's
        require_admin()
    else:
        require_api_key()
    return Response(services().metrics.render(), mimetype=CONTENT_TYPE_LATEST)
