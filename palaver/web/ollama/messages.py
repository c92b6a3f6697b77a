"""A conversation as Ollama's /api/chat sends it: text, an assistant's calls and tools' results; and the tools."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from palaver.core.tools import MAX_TOOLS, NAME_PATTERN, FunctionDefinition
from palaver.core.types import Message, ToolCall
from palaver.core.validation import RequestModel, body_error, field_error, neutral_or_refused
from palaver.web.api.schemas import settings_of, within_message_limit
from palaver.web.openai.messages import MAX_ARGUMENTS_CHARS

IMAGES_REFUSED = "images are not supported: Palaver serves text models"
Neutral = Annotated[Any, Field(description="Accepted only at the value that changes nothing.")]


class CalledFunction(RequestModel):
    name: str = Field(pattern=NAME_PATTERN)
    arguments: dict[str, Any] = Field(default_factory=dict, description="The arguments, as an object.")
    index: int | None = Field(None, description="Ollama's place of the call in its reply: accepted.")

    @field_validator("arguments")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, ensure_ascii=False)) > MAX_ARGUMENTS_CHARS:
            raise field_error(f"must be at most {MAX_ARGUMENTS_CHARS} characters as JSON")
        return value


class MessageToolCall(RequestModel):
    """A call an assistant message made earlier in the conversation."""

    id: str | None = Field(None, min_length=1, max_length=256)
    type: Literal["function"] | None = None
    function: CalledFunction


class ChatMessage(RequestModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Neutral = None
    thinking: str | None = Field(
        None,
        description="An assistant's earlier reasoning: accepted, and left out of the prompt as thinking models' "
        "templates leave old reasoning out.",
    )
    tool_calls: list[MessageToolCall] | None = Field(None, max_length=MAX_TOOLS, description="An assistant's calls.")
    tool_name: str | None = Field(None, max_length=64, description="On a tool message: the function that answered.")
    tool_call_id: str | None = Field(None, min_length=1, max_length=256, description="On a tool message: its call.")

    @field_validator("images")
    @classmethod
    def _no_images(cls, value: Any) -> Any:
        return neutral_or_refused(value, ([],), IMAGES_REFUSED)

    @field_validator("content")
    @classmethod
    def _within_limit(cls, content: str, info: ValidationInfo) -> str:
        return within_message_limit(content, info)

    @model_validator(mode="after")
    def _calls_and_results_in_their_roles(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise body_error("only assistant messages may carry 'tool_calls'", "tool_calls")
        if self.thinking and self.role != "assistant":
            raise body_error("only assistant messages may carry 'thinking': a reply's reasoning", "thinking")
        for name in ("tool_name", "tool_call_id"):
            if getattr(self, name) is not None and self.role != "tool":
                raise body_error(f"'{name}' belongs on tool messages; no other message may have one", name)
        return self

    def to_message(self, position: int) -> Message:
        """Return the message as Palaver's; calls without an id are named by their place in the conversation."""
        calls = tuple(
            ToolCall(
                call.id or f"call_{position}_{index}",
                call.function.name,
                json.dumps(call.function.arguments, ensure_ascii=False),
            )
            for index, call in enumerate(self.tool_calls or ())
        )
        return Message(self.role, self.content, tool_calls=calls, tool_call_id=self.tool_call_id)


class ToolParam(RequestModel):
    """A function the reply may call, in Ollama's (OpenAI's) shape: type function, and the function."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


def message_count(messages: Any, info: ValidationInfo) -> Any:
    """Accept a list of at most PALAVER_MAX_MESSAGES messages (none is a load), before each is checked."""
    limit = settings_of(info).max_messages
    if isinstance(messages, list) and len(messages) > limit:
        raise field_error(f"must be a list of at most {limit} messages (got {len(messages)})")
    return messages


def a_conversation(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Accept no messages (a load), or messages that end with a user's or a tool's."""
    if messages and messages[-1].role not in ("user", "tool"):
        raise field_error("must end with a user or tool message; a last assistant message is not supported")
    if messages and not any(m.role == "user" and m.content.strip() for m in messages):
        raise field_error("must hold at least one non-empty user message")
    return messages


# A chat's messages, as /ollama/api/chat takes them: none at all asks for the model to be loaded.
Conversation = Annotated[list[ChatMessage], BeforeValidator(message_count), AfterValidator(a_conversation)]


def conversation_messages(messages: list[ChatMessage]) -> list[Message]:
    """Return the messages as Palaver's, each call named by its place where it has no id."""
    return [message.to_message(position) for position, message in enumerate(messages)]
