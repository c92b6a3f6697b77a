"""A response's place in its conversation: the stored response it continues, and what it stores for the next."""

from __future__ import annotations

import re
from collections.abc import Callable

from palaver.core.errors import NotFound
from palaver.core.history import kept_history
from palaver.core.types import Message, ToolCall
from palaver.storage.responses import ResponseStore, StoredResponse
from palaver.web.responses.request_schemas import RESPONSE_ID, ResponsesRequest
from palaver.web.responses.response_schemas import FunctionCall, OutputMessage, ResponseObject


def not_found(response_id: str, param: str | None = None) -> NotFound:
    """Return the 404 for a response that is unknown, deleted, swept, never stored or another's: all alike."""
    return NotFound(f"no stored response has the id '{response_id[:64]}'", param=param, code="response_not_found")


def stored(store: ResponseStore, response_id: str, owner: str | None) -> StoredResponse:
    """Return a stored response owner may use, or the 404 that says nothing of whose it might be."""
    found = store.get(response_id, owner) if is_response_id(response_id) else None
    if found is None:
        raise not_found(response_id)
    return found


def is_response_id(text: str) -> bool:
    """Tell whether text can be a response's id; anything else must not reach the database (PostgreSQL and NUL)."""
    return re.fullmatch(RESPONSE_ID, text) is not None


def earlier_conversation(store: ResponseStore, given: ResponsesRequest, owner: str | None) -> list[Message]:
    """Return the conversation of the response given continues, or none; a 404 naming previous_response_id."""
    if given.previous_response_id is None:
        return []
    found = store.get(given.previous_response_id, owner)
    if found is None:
        raise not_found(given.previous_response_id, "previous_response_id")
    return found.conversation


def reply_message(response: ResponseObject) -> Message | None:
    """Return a finished response's output as the assistant's message: its text and its calls; None if empty."""
    text = "".join(part.text for item in response.output if isinstance(item, OutputMessage) for part in item.content)
    calls = tuple(
        ToolCall(item.call_id, item.name, item.arguments) for item in response.output if isinstance(item, FunctionCall)
    )
    return Message("assistant", text, tool_calls=calls) if text or calls else None


def keeper(
    store: ResponseStore,
    given: ResponsesRequest,
    conversation: list[Message],
    owner: str | None,
    client: str | None,
    most: int,
) -> Callable[[ResponseObject], None]:
    """Return how a finished response is kept, with its input items and its conversation; with store off, not."""
    if not given.store:
        return lambda response: None
    items = [item.listed() for item in given.input]

    def keep(response: ResponseObject) -> None:
        reply = reply_message(response)
        whole = [*conversation, reply] if reply is not None else conversation
        # What a later response reads is bounded, as a conversation's prompt is: its oldest turns go in blocks.
        kept = kept_history(whole, most)[0]
        body = response.model_dump()
        store.put(StoredResponse(response.id, owner, client, store.now(), body, items, kept))

    return keep
