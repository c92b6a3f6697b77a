"""OpenAI's Responses API under /v1: create a response (streamed or not), retrieve or delete it, list its input."""

from __future__ import annotations

from flask import Blueprint, g, request

from palaver.core.errors import InvalidRequest
from palaver.core.requests import GenerationRequest
from palaver.core.types import Reply, final
from palaver.web.body import read_json
from palaver.web.connection import client_gone_probe
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.generations import TRUNCATED_HEADER, start_all
from palaver.web.owners import current_owner
from palaver.web.responses.events import response_events
from palaver.web.responses.history import earlier_conversation, is_response_id, keeper, not_found, stored
from palaver.web.responses.items import new_item_id
from palaver.web.responses.request_schemas import ResponsesRequest
from palaver.web.responses.response_schemas import (
    DeletedResponse,
    InputItemList,
    InputItemsQuery,
    ResponseObject,
    RetrieveQuery,
)
from palaver.web.security import require_api_key
from palaver.web.services import services
from palaver.web.sse import event_stream

responses = Blueprint("responses", __name__, url_prefix="/v1")
responses.before_request(require_api_key)


@responses.post("/responses")
def create():
    """Answer an input, continuing a stored response if asked: one response object, or a stream of its events."""
    app = services()
    given = ResponsesRequest.parse(read_json(), {"settings": app.settings})
    model = given.served_model(app.backend)
    owner, store = current_owner(), app.chat.store.responses
    conversation = given.continued(earlier_conversation(store, given, owner))
    params = given.generation_params(app.settings.generation_defaults())
    request = GenerationRequest(
        params,
        messages=app.presets.get(None).apply(given.prompt_messages(conversation)),
        tools=given.tool_use(),
        grammar=given.reply_grammar(),
        model=model,
        client_gone=client_gone_probe(),
    )
    # A list of inputs is one request: one row of the client's share. Errors found before any text keep their status.
    [stream], info = start_all([request], app.backend, "input")
    if info.truncated_turns and given.truncation != "auto":
        stream.close()
        raise InvalidRequest(
            f"'input' does not fit the model's context: {info.truncated_turns} of the oldest turns would be left out; "
            "send truncation: auto to leave them out",
            param="input",
            code="context_length_exceeded",
        )
    headers = {TRUNCATED_HEADER: str(info.truncated_turns)}
    started = ResponseObject.started(given, app.backend.public_name(model), params)
    keep = keeper(store, given, conversation, owner, g.get("caller"), app.settings.max_messages)
    message_id = new_item_id("message")
    if given.stream:
        return event_stream(response_events(stream, started, message_id, keep), headers)
    finished = started.finished(final(stream, Reply), message_id)
    keep(finished)
    return finished.model_dump(), 200, headers


@responses.get("/responses/<response_id>")
def retrieve(response_id: str):
    """Return a stored response, as it was when it finished."""
    RetrieveQuery.parse(request.args.to_dict(), from_text=True)
    return stored(services().chat.store.responses, response_id, current_owner()).body


@responses.delete("/responses/<response_id>")
def delete(response_id: str):
    """Delete a stored response: it can no longer be retrieved or continued."""
    if not is_response_id(response_id) or not services().chat.store.responses.delete(response_id, current_owner()):
        raise not_found(response_id)
    return DeletedResponse(id=response_id).model_dump()


@responses.get("/responses/<response_id>/input_items")
def input_items(response_id: str):
    """List a stored response's input items, a page at a time: the last first unless order=asc."""
    query = InputItemsQuery.parse(request.args.to_dict(), from_text=True)
    found = stored(services().chat.store.responses, response_id, current_owner())
    return InputItemList.page(found.input_items, query).model_dump()


@responses.errorhandler(Exception)
def responses_error(exc: Exception):
    """Answer any error in OpenAI's shape, as /v1/chat/completions does."""
    return json_error(to_palaver_error(exc))
