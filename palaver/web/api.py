"""The JSON API: chat, its published schema, conversation history, and health checks."""

from __future__ import annotations

from flask import Blueprint, Response
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
from palaver.web.protocol import ChatRequest, ChatResponse, chat_schema
from palaver.web.security import require_api_key

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_api_key)
health = Blueprint("health", __name__)


@api.post("/chat")
def chat():
    settings = get_settings()
    chat_input = ChatRequest.parse(read_json(), {"settings": settings}).to_input(settings)
    return ChatResponse.of(get_chat().send(chat_input, client_gone=client_gone_probe())).model_dump()


@api.get("/conversations/<conversation_id>")
def conversation(conversation_id: str):
    found = get_chat().find(conversation_id)
    return {"conversation_id": found.id, "messages": [m.as_dict() for m in list(found.messages)]}


@api.delete("/conversations/<conversation_id>")
def forget_conversation(conversation_id: str):
    get_chat().resolve(conversation_id)  # 404 unless it exists; its messages need not be read
    get_chat().store.delete(conversation_id)
    return {"conversation_id": conversation_id, "deleted": True}


@api.post("/conversations/<conversation_id>/cancel")
def cancel_generation(conversation_id: str):
    get_chat().resolve(conversation_id)  # a first turn still running counts: it can be stopped
    return {"conversation_id": conversation_id, "stopped": get_chat().cancel(conversation_id)}


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
def healthz():
    return {"status": "ok"}


@health.get("/readyz")
def readyz():
    engine = get_engine()
    description = engine.describe()
    return description, 200 if description["state"] == "ready" else 503


@health.get("/metrics")
def metrics():
    if not get_settings().metrics:  # off unless asked for, as llama.cpp's server does
        raise NotFound("metrics are off; set PALAVER_METRICS=1 to serve them")
    require_api_key()
    return Response(get_metrics().render(), mimetype=CONTENT_TYPE_LATEST)
