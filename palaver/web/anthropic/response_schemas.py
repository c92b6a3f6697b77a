"""Anthropic's response objects as typed models: the message, its blocks and usage, a token count, and errors."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import from_json

from palaver.core.errors import PalaverError
from palaver.core.types import Reply, ToolCall

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
# Anthropic's error types by status; any other 4xx is an invalid request, and any other 5xx the API's own error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def tool_use_id(call_id: str) -> str:
    """Return a call's id as Anthropic's are written: toolu_ and the call's own digits."""
    return call_id if call_id.startswith("toolu_") else "toolu_" + call_id.removeprefix("call_")


def stop_reason(reply: Reply) -> StopReason:
    """Say why a reply ended, in Anthropic's words."""
    if reply.finish_reason == "tool_calls":
        return "tool_use"
    if reply.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if reply.stop_sequence is not None else "end_turn"


def tool_input(arguments: str) -> dict[str, Any]:
    """Return a call's input as an object: as much of it as was written, when max_tokens cut it off."""
    try:
        value = from_json(arguments, allow_partial=True)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


def thinking_signature(thinking: str) -> str:
    """Sign a thinking block as clients expect one signed: a stable hash of its text, which nothing here checks."""
    return hashlib.sha256(thinking.encode("utf-8", "surrogatepass")).hexdigest()


class ThinkingBlock(BaseModel):
    """A thinking model's reasoning, before its answer."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]

    @classmethod
    def of(cls, call: ToolCall) -> ToolUseBlock:
        return cls(id=tool_use_id(call.id), name=call.name, input=tool_input(call.arguments))


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class MessagesResponse(BaseModel):
    """A reply as Anthropic's API gives one: its blocks, why it ended, and its tokens."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ThinkingBlock | TextBlock | ToolUseBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessageUsage

    @classmethod
    def of(cls, model: str, reply: Reply, message_id: str | None = None) -> MessagesResponse:
        """Describe a reply: its reasoning and its text (each when it has any), then its tool uses."""
        thought = [ThinkingBlock(thinking=reply.reasoning, signature=thinking_signature(reply.reasoning))]
        text = [TextBlock(text=reply.text)] if reply.text else []
        return cls(
            id=message_id or new_message_id(),
            model=model,
            content=[
                *(thought if reply.reasoning else []),
                *text,
                *(ToolUseBlock.of(call) for call in reply.tool_calls),
            ],
            stop_reason=stop_reason(reply),
            stop_sequence=reply.stop_sequence,
            usage=MessageUsage(input_tokens=reply.usage.prompt_tokens, output_tokens=reply.usage.completion_tokens),
        )

    @classmethod
    def started(cls, model: str, message_id: str, input_tokens: int) -> MessagesResponse:
        """Describe a streamed reply before its first block, as message_start carries it."""
        usage = MessageUsage(input_tokens=input_tokens, output_tokens=0)
        return cls(id=message_id, model=model, content=[], stop_reason=None, usage=usage)


class TokenCount(BaseModel):
    """POST /v1/messages/count_tokens' answer: what the same request's usage.input_tokens would be."""

    input_tokens: int


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorDetail

    @classmethod
    def of(cls, error: PalaverError) -> ErrorResponse:
        """Describe an error in Anthropic's shape: its type follows its status."""
        kind = ERROR_TYPES.get(error.status) or ("invalid_request_error" if error.status < 500 else "api_error")
        return cls(error=ErrorDetail(type=kind, message=error.message))
