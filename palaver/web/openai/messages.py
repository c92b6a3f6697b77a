"""The messages of a chat as OpenAI's API sends them: text, an assistant's calls, and tools' results."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from palaver.core.tools import MAX_TOOLS, NAME_PATTERN
from palaver.core.types import Message, ToolCall
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused
from palaver.web.api.schemas import settings_of, within_message_limit

MAX_ARGUMENTS_CHARS = 65_536


def text_content(content: Any) -> str:
    """Return a message's text, joining text parts; any other kind of part is refused."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(part["text"] for part in content)
    raise field_error("must be a string or a list of text parts; only text is supported")


MAX_TOP_LOGPROBS = 20
MAX_ARGUMENTS_CHARS = 65_536


class CalledFunction(RequestModel):
    name: str = Field(pattern=NAME_PATTERN)
    arguments: str = Field(max_length=MAX_ARGUMENTS_CHARS, description="The arguments, as the model wrote them.")


class MessageToolCall(RequestModel):
    """A call an assistant message made earlier in the conversation."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"]
    function: CalledFunction


# What OpenAI's own replies carry, so that a transcript replays as it came back: each is accepted at the value it
# has when it says nothing (null, or an empty list) and refused at any other, which Palaver could not honour.
REPLAYED_FIELDS: dict[str, str] = {
    "annotations": "annotations (a reply's citations) are not supported; send the message without them",
    "refusal": "refusal is not supported; send the refusal's text as 'content'",
    "audio": "audio is not supported; only text",
    "function_call": "function_call is deprecated by OpenAI and not supported; send 'tool_calls'",
}
Replayed = Annotated[Any, Field(description="Accepted as OpenAI's replies carry it when empty (null or []).")]


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, BeforeValidator(text_content)] = ""
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, min_length=1, max_length=256)
    annotations: Replayed = None
    refusal: Replayed = None
    audio: Replayed = None
    function_call: Replayed = None
    reasoning_content: str | None = Field(
        None,
        description="An earlier reply's reasoning: accepted, and left out of the prompt as thinking models' "
        "templates leave old reasoning out.",
    )
    reasoning: str | None = Field(None, description="The same, under vLLM's name.")

    @field_validator(*REPLAYED_FIELDS)
    @classmethod
    def _only_empty(cls, value: Any, info: ValidationInfo) -> Any:
        neutral_or_refused(value, (None, []), REPLAYED_FIELDS[info.field_name or ""])
        return None

    @model_validator(mode="before")
    @classmethod
    def _content_or_calls(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("role") == "assistant" and data.get("tool_calls") == []:
            data = {key: value for key, value in data.items() if key != "tool_calls"}  # a reply replayed: no calls
        # An assistant message that only calls functions may leave out its content; any other needs it.
        if (
            isinstance(data, dict)
            and data.get("content") is None
            and not (data.get("tool_calls") and data.get("role") == "assistant")
            and data.get("refusal") is None  # a refusal replayed in place of content is refused by its own name
        ):
            raise body_error("every message needs 'content', except an assistant's that has 'tool_calls'", "content")
        return data

    @model_validator(mode="after")
    def _calls_and_results_in_their_roles(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise body_error("only assistant messages may carry 'tool_calls'", "tool_calls")
        if self.role == "tool" and self.tool_call_id is None:
            raise body_error("a tool message needs 'tool_call_id': the call it answers", "tool_call_id")
        if self.role != "tool" and self.tool_call_id is not None:
            raise body_error("'tool_call_id' belongs on tool messages; no other message may have one", "tool_call_id")
        return self

    @field_validator("content")
    @classmethod
    def _within_limit(cls, content: str, info: ValidationInfo) -> str:
        return within_message_limit(content, info)

    def to_message(self) -> Message:
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ())
        role = "system" if self.role == "developer" else self.role
        return Message(role, self.content, tool_calls=calls, tool_call_id=self.tool_call_id)


def message_count(messages: Any, info: ValidationInfo) -> Any:
    """Accept a list of 1 to PALAVER_MAX_MESSAGES messages, before each is checked."""
    limit = settings_of(info).max_messages
    if not isinstance(messages, list) or not 0 < len(messages) <= limit:
        got = f" (got {len(messages)})" if isinstance(messages, list) else ""
        raise field_error(f"must be a list of 1 to {limit} messages{got}")
    return messages


def with_a_user_message(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Accept messages that hold at least one non-empty user message."""
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise field_error("must hold at least one non-empty user message")
    return messages


# A chat's messages, as /v1/chat/completions and /tokenize take them.
Conversation = Annotated[list[ChatMessage], BeforeValidator(message_count), AfterValidator(with_a_user_message)]
