"""A conversation as Anthropic's Messages API sends it: text, tool uses and their results, and the system prompt."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from palaver.core.tools import NAME_PATTERN
from palaver.core.types import Message, ToolCall
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused, unsupported
from palaver.web.api.schemas import settings_of
from palaver.web.openai.messages import MAX_ARGUMENTS_CHARS, message_count

# The fields each kind of block takes (beside type and cache_control): those it needs, then those it may have.
BLOCK_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("text",), ("citations",)),
    "tool_use": (("id", "name", "input"), ()),
    "tool_result": (("tool_use_id",), ("content", "is_error")),
    # An earlier reply's reasoning, as clients send it back: accepted in an assistant's turn, and left out of the
    # prompt, as thinking models' templates leave old reasoning out.
    "thinking": (("thinking",), ("signature",)),
    "redacted_thinking": (("data",), ()),
}
REASONING_BLOCKS = ("thinking", "redacted_thinking")
# Blocks Anthropic's API takes that a text model served here cannot read: each refused by name, with why.
UNSUPPORTED_BLOCKS = {
    "image": "image blocks are not supported: Palaver serves text models",
    "document": "document blocks are not supported; send the document's text in a text block",
    "search_result": "search_result blocks are not supported; send the results' text in a text block",
}
ERROR_PREFIX = "Error: "  # a tool_result with is_error, as the model reads it


def refused_block(kind: str, allowed: tuple[str, ...]) -> Any:
    """Return the error for a block of a kind that has no place here, naming the kind."""
    reason = UNSUPPORTED_BLOCKS.get(kind, f"{kind} blocks are not supported (server tools run at Anthropic only)")
    return unsupported(f"{reason}; here a block is {', '.join(allowed)}")


def as_text_blocks(value: Any) -> Any:
    """Take a string as Anthropic's API does: one text block; refuse what is neither a string nor blocks."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise field_error("must be a string or a list of content blocks")
    return value


class CacheControl(RequestModel):
    """A prompt-caching hint: accepted, as Palaver's prefix cache keeps every prompt's start without one."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


Citations = Annotated[Any, Field(description="Accepted empty (null or []): a reply's citations are not supported.")]


class TextBlockParam(RequestModel):
    """A text block: of the system prompt, or of a tool's result."""

    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: Citations = None

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("type"), str) and data["type"] != "text":
            raise refused_block(data["type"], ("text",))
        return data

    @field_validator("citations")
    @classmethod
    def _no_citations(cls, value: Any) -> Any:
        return neutral_or_refused(value, (None, []), "citations are not supported; send the text without them")


TextBlocks = Annotated[list[TextBlockParam], BeforeValidator(as_text_blocks)]


class ContentBlockParam(RequestModel):
    """One block of a message: text, a tool_use (an assistant's call), a tool_result (a user's answer to one), or an
    assistant's earlier thinking."""

    type: Literal["text", "tool_use", "tool_result", "thinking", "redacted_thinking"]
    text: str | None = None
    id: str | None = Field(None, min_length=1, max_length=256, description="A tool_use's id.")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="The tool a tool_use calls.")
    input: dict[str, Any] | None = Field(None, description="A tool_use's input: an object.")
    tool_use_id: str | None = Field(None, min_length=1, max_length=256, description="The tool_use a result answers.")
    content: TextBlocks | None = None
    is_error: bool | None = None
    thinking: str | None = Field(None, description="A thinking block's reasoning: left out of the prompt.")
    signature: str | None = None
    data: str | None = Field(None, description="A redacted_thinking block's reasoning: left out of the prompt.")
    cache_control: CacheControl | None = None
    citations: Citations = None

    @model_validator(mode="before")
    @classmethod
    def _fields_of_its_kind(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
            return data  # the fields' own checks name what is wrong
        kind, given = data["type"], {key for key, value in data.items() if value is not None}
        if kind not in BLOCK_FIELDS:
            raise refused_block(kind, tuple(BLOCK_FIELDS))
        needed, optional = BLOCK_FIELDS[kind]
        missing = next((name for name in needed if name not in given), None)
        if missing is not None:
            raise body_error(f"a {kind} block needs '{missing}'", missing)
        accepted = ("type", *needed, *optional, "cache_control")
        foreign = next((name for name in given if name not in accepted), None)
        if foreign is not None:
            listed = ", ".join(accepted)
            raise body_error(f"a {kind} block takes only {listed}; '{foreign}' is not one of them", foreign)
        return data

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, ensure_ascii=False)) > MAX_ARGUMENTS_CHARS:
            raise field_error(f"must be at most {MAX_ARGUMENTS_CHARS} characters as JSON")
        return value

    @field_validator("citations")
    @classmethod
    def _no_citations(cls, value: Any) -> Any:
        return neutral_or_refused(value, (None, []), "citations are not supported; send the text without them")

    def read_text(self) -> str:
        """Return the text the model reads of this block: its text, or its result's (marked when it failed)."""
        if self.type == "text":
            return self.text or ""
        if self.type in REASONING_BLOCKS:
            return ""
        result = "".join(block.text for block in self.content or ())
        return ERROR_PREFIX + result if self.is_error else result


class MessageParam(RequestModel):
    """A turn of the conversation: the user's (text, tool results) or the assistant's (text, tool uses)."""

    role: Literal["user", "assistant"]
    content: Annotated[list[ContentBlockParam], BeforeValidator(as_text_blocks)]

    @field_validator("content")
    @classmethod
    def _within_limit(cls, blocks: list[ContentBlockParam], info: ValidationInfo) -> list[ContentBlockParam]:
        max_chars = settings_of(info).max_message_chars
        if sum(len(block.read_text()) for block in blocks) > max_chars:
            raise field_error(f"must hold at most {max_chars} characters of text")
        return blocks

    @model_validator(mode="after")
    def _blocks_in_their_roles(self) -> MessageParam:
        misplaced = ("tool_result",) if self.role == "assistant" else ("tool_use", *REASONING_BLOCKS)
        found = next((block.type for block in self.content if block.type in misplaced), None)
        if found is not None:
            owner = "user" if found == "tool_result" else "assistant"
            raise body_error(f"only {owner} messages may hold {found} blocks", "content")
        return self

    def read_text(self) -> str:
        return "".join(block.read_text() for block in self.content if block.type == "text")

    def to_messages(self) -> list[Message]:
        """Return the turn as Palaver's messages: an assistant's calls, or a user's results (then their text)."""
        if self.role == "assistant":
            calls = tuple(
                ToolCall(block.id or "", block.name or "", json.dumps(block.input, ensure_ascii=False))
                for block in self.content
                if block.type == "tool_use"
            )
            return [Message("assistant", self.read_text(), tool_calls=calls)]
        results = [
            Message("tool", block.read_text(), tool_call_id=block.tool_use_id)
            for block in self.content
            if block.type == "tool_result"
        ]
        text = self.read_text()
        return [*results, Message("user", text)] if text or not results else results


def ends_with_a_user_turn(messages: list[MessageParam]) -> list[MessageParam]:
    """Accept a conversation whose last message is the user's, with text or a tool's result."""
    last = messages[-1]
    if last.role != "user":
        raise field_error("must end with a user message; a last assistant message (a prefill) is not supported")
    if not last.read_text().strip() and not any(block.type == "tool_result" for block in last.content):
        raise field_error("must end with a user message that holds text or a tool_result")
    return messages


# A conversation, as /v1/messages and /v1/messages/count_tokens take it.
Conversation = Annotated[list[MessageParam], BeforeValidator(message_count), AfterValidator(ends_with_a_user_turn)]


def conversation_messages(system: list[TextBlockParam] | None, messages: list[MessageParam]) -> list[Message]:
    """Return the system prompt, if any, and every turn as Palaver's messages."""
    prompt = "".join(block.text for block in system or ())
    turns = [message for turn in messages for message in turn.to_messages()]
    return [Message("system", prompt), *turns] if prompt else turns
