"""OpenAI's response objects as typed models: completions, their stream chunks, usage and the model list."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from palaver.core.types import Reply, Usage


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(reply: Reply) -> Literal["stop", "length"]:
    return "length" if reply.finish_reason == "length" else "stop"


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    truncated_turns: int = Field(0, description="Oldest messages left out of the prompt (a Palaver extension).")

    @classmethod
    def of(cls, usage: Usage, truncated_turns: int = 0) -> CompletionUsage:
        return cls(**usage.as_dict(), truncated_turns=truncated_turns)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    system_fingerprint: str | None = None

    @classmethod
    def of(cls, model: str, replies: list[Reply], fingerprint: str | None = None) -> ChatCompletion:
        """Describe the choices' replies; their prompt is counted once, and every choice's completion."""
        completion = sum(reply.usage.completion_tokens for reply in replies)
        usage = Usage(replies[0].usage.prompt_tokens, completion)
        return cls(
            id=new_id("chatcmpl"),
            model=model,
            system_fingerprint=fingerprint,
            choices=[
                ChatChoice(
                    index=index, message=AssistantMessage(content=reply.text), finish_reason=finish_reason(reply)
                )
                for index, reply in enumerate(replies)
            ],
            usage=CompletionUsage.of(usage, replies[0].truncated_turns),
        )


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None

    def as_event(self, include_usage: bool) -> dict[str, Any]:
        """Dump the chunk; usage is a key of every chunk only when the client asked for it."""
        return self.model_dump(exclude_none=False, exclude=None if include_usage else {"usage"})


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[TextChoice]
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = None

    def as_event(self) -> dict[str, Any]:
        """Dump the object, leaving usage out of the chunks that carry none."""
        return self.model_dump(exclude=None if self.usage else {"usage"})


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "palaver"
    family: str
    context_length: int | None
    max_input_tokens: int | None
    max_output_tokens: int | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
