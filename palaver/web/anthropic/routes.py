"""Anthropic's Messages API under /v1: a reply, streamed or not, and a prompt's token count."""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint

from palaver.core.requests import GenerationRequest
from palaver.core.types import Reply, final
from palaver.web.anthropic.events import message_events
from palaver.web.anthropic.request_schemas import MessagesInput, MessagesRequest
from palaver.web.anthropic.response_schemas import ErrorResponse, MessagesResponse, TokenCount
from palaver.web.body import read_json
from palaver.web.connection import client_gone_probe
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.generations import TRUNCATED_HEADER, start_all
from palaver.web.security import require_api_key
from palaver.web.services import services
from palaver.web.sse import event_stream

anthropic = Blueprint("anthropic", __name__, url_prefix="/v1")
anthropic.before_request(require_api_key)


@anthropic.post("/messages")
def messages():
    """Answer a conversation as Anthropic's API does: one message, or a stream of its events."""
    app = services()
    given = MessagesRequest.parse(read_json(), {"settings": app.settings})
    model = given.served_model(app.backend)
    request = GenerationRequest(
        given.generation_params(app.settings.generation_defaults()),
        messages=given.conversation(app.presets),
        tools=given.tool_use(),
        grammar=given.reply_grammar(),
        model=model,
        client_gone=client_gone_probe(),
    )
    # Errors found before any text (a prompt too long, a loading model) keep their status.
    [stream], info = start_all([request], app.backend, "messages")
    headers = {TRUNCATED_HEADER: str(info.truncated_turns)}
    name = app.backend.public_name(model)
    if given.stream:
        return event_stream(message_events(stream, name, info.prompt_tokens), headers)
    return MessagesResponse.of(name, final(stream, Reply)).model_dump(), 200, headers


@anthropic.post("/messages/count_tokens")
def count_tokens():
    """Count the tokens the same request to /v1/messages would be fed: its usage.input_tokens."""
    app = services()
    given = MessagesInput.parse(read_json(), {"settings": app.settings})
    model = given.served_model(app.backend)
    conversation, tools = given.conversation(app.presets), given.tool_use()
    params = replace(app.settings.generation_defaults(), thinking=given.thinking_wanted())  # as /v1/messages renders
    request = GenerationRequest(params, messages=conversation, tools=tools, model=model)
    return TokenCount(input_tokens=len(app.backend.tokenize(request))).model_dump()


@anthropic.errorhandler(Exception)
def anthropic_error(exc: Exception):
    """Answer any error in Anthropic's shape: {"type": "error", "error": {"type", "message"}}."""
    error = to_palaver_error(exc)
    return json_error(error, ErrorResponse.of(error).model_dump())
