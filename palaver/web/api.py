"""The JSON API: chat, its published schema, the caller's conversations, and health checks."""

from __future__ import annotations

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from palaver.errors import NotFound
from palaver.web.boundary import (
    client_gone_probe,
    get_chat,
    get_engine,
    get_metrics,
    get_settings,
    json_error,
    read_json,
    to_palaver_error,
)
from palaver.web.history import (
    ConversationExport,
    ConversationInfo,
    ConversationListQuery,
    ConversationPage,
    ExportQuery,
    RenameRequest,
    as_markdown,
    encode_cursor,
)
from palaver.web.owners import current_owner
from palaver.web.probes import health as health_answer
from palaver.web.protocol import ChatRequest, ChatResponse, chat_schema
from palaver.web.security import require_api_key

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_api_key)
health = Blueprint("health", __name__)


@api.post("/chat")
def chat():
    settings = get_settings()
    chat_input = ChatRequest.parse(read_json(), {"settings": settings}).to_input(settings)
    turn = get_chat().send(chat_input, current_owner(), client_gone=client_gone_probe())
    return ChatResponse.of(turn).model_dump()


@api.get("/conversations")
def list_conversations():
    query = ConversationListQuery.parse(request.args.to_dict(), from_text=True)
    owner = current_owner()  # a caller with neither key nor cookie owns nothing, so its list is empty
    found = get_chat().store.owned(owner, query.limit + 1, query.after(), query.q) if owner else []
    shown = found[: query.limit]
    next_cursor = encode_cursor(shown[-1]) if len(found) > query.limit else None
    return ConversationPage(conversations=[ConversationInfo.of(c) for c in shown], next_cursor=next_cursor).model_dump(
        mode="json"
    )


@api.get("/conversations/<conversation:conversation_id>")
def conversation(conversation_id: str):
    found = get_chat().find(conversation_id, current_owner())
    return {**ConversationInfo.of(found).model_dump(mode="json"), "messages": [m.as_dict() for m in found.messages]}


@api.patch("/conversations/<conversation:conversation_id>")
def rename_conversation(conversation_id: str):
    title = RenameRequest.parse(read_json()).title
    return ConversationInfo.of(get_chat().rename(conversation_id, title, current_owner())).model_dump(mode="json")


@api.get("/conversations/<conversation:conversation_id>/export")
def export_conversation(conversation_id: str):
    kind = ExportQuery.parse(request.args.to_dict(), from_text=True).format
    found = get_chat().find(conversation_id, current_owner())
    if kind == "markdown":
        body, mimetype = as_markdown(found), "text/markdown"
    else:
        body, mimetype = ConversationExport.whole(found).model_dump_json(indent=2), "application/json"
    extension = "md" if kind == "markdown" else "json"
    disposition = f'attachment; filename="conversation-{found.id}.{extension}"'
    return Response(body, mimetype=mimetype, headers={"Content-Disposition": disposition})


@api.delete("/conversations/<conversation:conversation_id>")
def forget_conversation(conversation_id: str):
    get_chat().delete(conversation_id, current_owner())
    return {"conversation_id": conversation_id, "deleted": True}


@api.post("/conversations/<conversation:conversation_id>/cancel")
def cancel_generation(conversation_id: str):
    owner = current_owner()
    get_chat().resolve(conversation_id, owner)  # a first turn still running counts: it can be stopped
    return {"conversation_id": conversation_id, "stopped": get_chat().cancel(conversation_id, owner)}


@api.get("/schema")
def schema():
    engine = get_engine()
    return {
        **chat_schema(get_settings()),
        "presets": [preset.describe() for preset in engine.presets],
        "model": engine.describe(),
    }


@api.errorhandler(Exception)
def api_error(exc: Exception):
    return json_error(to_palaver_error(exc))


@health.get("/healthz")
@health.get("/readyz")
def probe():
    """Answer a probe the poller did not (the Flask test client, another server): the same body and status."""
    status, body = health_answer(get_engine().describe, request.path)
    return body, status


@health.get("/metrics")
def metrics():
    if not get_settings().metrics:  # off unless asked for, as llama.cpp's server does
        raise NotFound("metrics are off; set PALAVER_METRICS=1 to serve them")
    require_api_key()
    return Response(get_metrics().render(), mimetype=CONTENT_TYPE_LATEST)
