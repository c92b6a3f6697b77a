"""A response's input as the Responses API sends it: messages, function calls, their outputs and reasoning, as items."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from palaver.core.tools import NAME_PATTERN
from palaver.core.types import Message, ToolCall
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused, unsupported
from palaver.web.api.schemas import settings_of
from palaver.web.openai.messages import MAX_ARGUMENTS_CHARS

# The fields each kind of item takes (beside type, id and status): those it needs, then those it may have.
ITEM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "message": (("role", "content"), ()),
    "function_call": (("call_id", "name", "arguments"), ()),
    "function_call_output": (("call_id", "output"), ()),
    "reasoning": (("summary",), ("content", "encrypted_content")),
}
ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
# Parts a text model served here cannot read: each refused by name, with why.
UNSUPPORTED_PARTS = {
    "input_image": "image inputs are not supported: Palaver serves text models",
    "input_file": "file inputs are not supported; send the file's text as input_text",
    "input_audio": "audio inputs are not supported: Palaver serves text models",
    "refusal": "refusal parts are not supported; send the refusal's text as output_text",
}
Replayed = Annotated[Any, Field(description="Accepted as OpenAI's replies carry it when empty (null or []).")]
ItemId = Annotated[str, Field(min_length=1, max_length=256)]


def new_item_id(kind: str) -> str:
    return f"{ITEM_PREFIXES[kind]}_{uuid.uuid4().hex}"


def call_item_id(call_id: str) -> str:
    """Return the id of the item that holds a call: fc_ and the call's own digits."""
    return "fc_" + call_id.removeprefix("call_")


def reasoning_item_id(message_id: str) -> str:
    """Return the id of the reasoning item before a reply's message: rs_ and the message's own digits."""
    return "rs_" + message_id.removeprefix("msg_")


def as_parts(value: Any) -> Any:
    """Refuse content that is neither a string (made one part before) nor a list of parts."""
    if not isinstance(value, list):
        raise field_error("must be a string or a list of content parts")
    return value


def with_text_parts(data: Mapping[str, Any]) -> dict[str, Any]:
    """Take a string content or output as the Responses API does: one text part of the kind its role writes."""
    kind = "output_text" if data.get("role") == "assistant" else "input_text"
    return {
        name: [{"type": kind, "text": value}] if name in ("content", "output") and isinstance(value, str) else value
        for name, value in data.items()
    }


class ContentPart(RequestModel):
    """Text in a message: input_text in the user's, system's or developer's, output_text in the assistant's; a
    reasoning item's reasoning_text."""

    type: Literal["input_text", "output_text", "reasoning_text"]
    text: str
    annotations: Replayed = None
    logprobs: Replayed = None

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, Mapping) else None
        if isinstance(kind, str) and kind not in ("input_text", "output_text", "reasoning_text"):
            reason = UNSUPPORTED_PARTS.get(kind, f"{kind} parts are not supported")
            raise unsupported(f"{reason}; here a part is input_text or output_text")
        return data

    @field_validator("annotations", "logprobs")
    @classmethod
    def _only_empty(cls, value: Any, info: ValidationInfo) -> Any:
        return neutral_or_refused(value, (None, []), f"{info.field_name} are not supported; send the text alone")


class SummaryPart(RequestModel):
    """A reasoning item's summary, as OpenAI's reasoning models write one: accepted, and left out of the prompt."""

    type: Literal["summary_text"]
    text: str


def refused_item(kind: str) -> Any:
    """Return the error for an item of a kind that has no place here, naming the kind."""
    if kind == "item_reference":
        return unsupported("item_reference items are not supported; send the items, or continue previous_response_id")
    return unsupported(
        f"'{kind}' items are not supported: Palaver runs function tools only; "
        "here an item is a message, a function_call, a function_call_output or a reasoning item"
    )


class InputItem(RequestModel):
    """One item of the input: a message, a function call the assistant made, a function's output, or an earlier
    reply's reasoning (accepted, and left out of the prompt, as thinking models' templates leave it out)."""

    type: Literal["message", "function_call", "function_call_output", "reasoning"] = "message"
    id: ItemId | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: Annotated[list[ContentPart], BeforeValidator(as_parts)] | None = None
    call_id: ItemId | None = None
    name: str | None = Field(None, pattern=NAME_PATTERN)
    arguments: str | None = Field(None, max_length=MAX_ARGUMENTS_CHARS)
    output: Annotated[list[ContentPart], BeforeValidator(as_parts)] | None = None
    summary: list[SummaryPart] | None = None
    encrypted_content: str | None = Field(None, description="Accepted, and left out: Palaver never writes one.")

    @model_validator(mode="before")
    @classmethod
    def _fields_of_its_kind(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data  # the model's own check names what is wrong
        kind = data.get("type", "message")
        if not isinstance(kind, str):
            return data
        if kind not in ITEM_FIELDS:
            raise refused_item(kind)
        given = {key for key, value in data.items() if value is not None}
        needed, optional = ITEM_FIELDS[kind]
        missing = next((name for name in needed if name not in given), None)
        if missing is not None:
            raise body_error(f"a {kind} item needs '{missing}'", missing)
        accepted = ("type", "id", "status", *needed, *optional)
        foreign = next((name for name in given if name not in accepted), None)
        if foreign is not None:
            raise body_error(f"a {kind} item takes only {', '.join(accepted)}; '{foreign}' is not one of them", foreign)
        return with_text_parts(data)

    @model_validator(mode="after")
    def _parts_of_its_role(self) -> InputItem:
        wanted = "output_text" if self.role == "assistant" else "input_text"
        holder = f"a {self.role} message"
        if self.type == "reasoning":
            wanted, holder = "reasoning_text", "a reasoning item"
        if any(part.type != wanted for part in self.content or ()):
            raise body_error(f"{holder} holds {wanted} parts only", "content")
        if any(part.type == "reasoning_text" for part in self.output or ()):
            raise body_error("reasoning_text parts belong in reasoning items, not in a function's output", "output")
        return self

    @field_validator("content", "output", "summary")
    @classmethod
    def _within_limit(cls, parts: list[ContentPart | SummaryPart], info: ValidationInfo) -> list[Any]:
        max_chars = settings_of(info).max_message_chars
        if sum(len(part.text) for part in parts) > max_chars:
            raise field_error(f"must hold at most {max_chars} characters of text")
        return parts

    def text(self) -> str:
        """Return the text the model reads of a message or a function's output."""
        return "".join(part.text for part in self.content or self.output or ())

    def listed(self) -> dict[str, Any]:
        """Describe the item as /v1/responses/{id}/input_items lists it, with an id of its own."""
        item: dict[str, Any] = {"id": self.id or new_item_id(self.type), "type": self.type, "status": "completed"}
        if self.type == "message":
            kind = "output_text" if self.role == "assistant" else "input_text"
            extra: dict[str, Any] = {"annotations": []} if kind == "output_text" else {}
            parts = [{"type": kind, "text": part.text, **extra} for part in self.content or ()]
            return {**item, "role": self.role, "content": parts}
        if self.type == "function_call":
            return {**item, "call_id": self.call_id, "name": self.name, "arguments": self.arguments}
        if self.type == "reasoning":
            summary = [part.model_dump() for part in self.summary or ()]
            content = [{"type": "reasoning_text", "text": part.text} for part in self.content or ()]
            kept = {"encrypted_content": self.encrypted_content} if self.encrypted_content is not None else {}
            return {**item, "summary": summary, "content": content, **kept}
        return {**item, "call_id": self.call_id, "output": self.text()}


def as_items(value: Any, info: ValidationInfo) -> Any:
    """Take a string as one user message, and accept a list of 1 to PALAVER_MAX_MESSAGES items."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    limit = settings_of(info).max_messages
    if not isinstance(value, list) or not 0 < len(value) <= limit:
        got = f" (got {len(value)})" if isinstance(value, list) else ""
        raise field_error(f"must be a string or a list of 1 to {limit} items{got}")
    return value


# A response's input, as POST /v1/responses takes it.
Input = Annotated[list[InputItem], BeforeValidator(as_items)]


def conversation_of(items: list[InputItem]) -> list[Message]:
    """Return items as Palaver's messages: a function call joins the assistant message it follows, if any.

    Reasoning items are left out, as a thinking model's template leaves an earlier reply's thinking out.
    """
    messages: list[Message] = []
    for item in items:
        if item.type == "reasoning":
            continue
        if item.type == "message":
            role = "system" if item.role == "developer" else item.role or "user"
            messages.append(Message(role, item.text()))
        elif item.type == "function_call":
            call = ToolCall(item.call_id or "", item.name or "", item.arguments or "")
            if messages and messages[-1].role == "assistant":
                messages[-1] = replace(messages[-1], tool_calls=(*messages[-1].tool_calls, call))
            else:
                messages.append(Message("assistant", "", tool_calls=(call,)))
        else:
            messages.append(Message("tool", item.text(), tool_call_id=item.call_id))
    return messages
