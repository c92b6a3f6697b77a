"""Ollama's reply objects as typed models: a chat's message and a generation's text, whole or in parts, and errors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from palaver.core.errors import PalaverError
from palaver.core.types import PromptInfo, Reply, ToolCall
from palaver.web.anthropic.response_schemas import tool_input

DoneReason = Literal["stop", "length", "load", "unload"]
NANOSECONDS = 1_000_000_000


def created_at() -> str:
    """Return now as Ollama writes its times: RFC 3339, in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def done_reason(reply: Reply) -> DoneReason:
    """Say why a reply ended, in Ollama's words: its length, or anything else (a stop, calls) as stop."""
    return "length" if reply.finish_reason == "length" else "stop"


@dataclass
class Clock:
    """When a request's stages ended, for the durations Ollama reports: loading, reading the prompt, writing."""

    loading: bool  # whether the model had to be loaded for this request
    started: float = field(default_factory=time.monotonic)
    joined: float = 0.0  # the request had its model and its place in the batch
    first: float = 0.0  # the first part of the reply came (the prompt had been read)
    finished: float = 0.0

    def saw(self, item: Any) -> None:
        """Note the time of an event of the reply's stream."""
        now = time.monotonic()
        if isinstance(item, PromptInfo):
            self.joined = now
            return
        self.first = self.first or now
        if isinstance(item, Reply):
            self.finished = now

    def metrics(self, reply: Reply) -> dict[str, int]:
        """Return the reply's counts and its stages' durations, in nanoseconds, under Ollama's names."""
        joined = self.joined or self.started
        first = self.first or joined
        finished = self.finished or time.monotonic()
        load = nanoseconds(joined - self.started) if self.loading else 0
        reading = nanoseconds(first - (joined if self.loading else self.started))
        writing = nanoseconds(finished - first)
        return {
            "total_duration": load + reading + writing,  # the stages' sum, so that no rounding makes them outgrow it
            "load_duration": load,
            "prompt_eval_count": reply.usage.prompt_tokens,
            "prompt_eval_duration": reading,
            "eval_count": reply.usage.completion_tokens,
            "eval_duration": writing,
        }


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * NANOSECONDS))


class FunctionCall(BaseModel):
    name: str
    arguments: dict[str, Any]


class ToolCallObject(BaseModel):
    """A call as Ollama writes one: its function's name and its arguments as an object."""

    id: str
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallObject:
        return cls(id=call.id, function=FunctionCall(name=call.name, arguments=tool_input(call.arguments)))


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    thinking: str | None = None  # a thinking model's reasoning, apart from its answer
    tool_calls: list[ToolCallObject] | None = None


class Answer(BaseModel):
    """What every object /api/chat and /api/generate send carries: the model, the time, and, last, how it ended."""

    model: str
    created_at: str = Field(default_factory=created_at)
    done: bool = False
    done_reason: DoneReason | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the object as Ollama sends it: fields without a value left out."""
        return self.model_dump(exclude_none=True)


class ChatResponse(Answer):
    """A chat's reply, or (streamed) a part of it; the last part says why it ended and what it took."""

    message: AssistantMessage = Field(default_factory=AssistantMessage)

    @classmethod
    def of(cls, model: str, reply: Reply, clock: Clock) -> ChatResponse:
        """Describe a whole reply: its text, its reasoning and its calls, why it ended and what it took."""
        calls = [ToolCallObject.of(call) for call in reply.tool_calls] or None
        message = AssistantMessage(content=reply.text, thinking=reply.reasoning or None, tool_calls=calls)
        return cls(model=model, message=message, done=True, done_reason=done_reason(reply), **clock.metrics(reply))

    @classmethod
    def ended(cls, model: str, reply: Reply, clock: Clock) -> ChatResponse:
        """Describe a streamed reply's end: no more text, why it ended and what it took."""
        return cls(model=model, done=True, done_reason=done_reason(reply), **clock.metrics(reply))


class GenerateResponse(Answer):
    """A generation's text, or (streamed) a part of it; the last part says why it ended and what it took."""

    response: str = ""
    thinking: str | None = None  # a thinking model's reasoning, apart from its answer

    @classmethod
    def of(cls, model: str, reply: Reply, clock: Clock) -> GenerateResponse:
        return cls(
            model=model,
            response=reply.text,
            thinking=reply.reasoning or None,
            done=True,
            done_reason=done_reason(reply),
            **clock.metrics(reply),
        )

    @classmethod
    def ended(cls, model: str, reply: Reply, clock: Clock) -> GenerateResponse:
        return cls(model=model, done=True, done_reason=done_reason(reply), **clock.metrics(reply))


class ErrorResponse(BaseModel):
    """Ollama's error: one message, the status saying the rest."""

    error: str

    @classmethod
    def of(cls, error: PalaverError) -> ErrorResponse:
        return cls(error=error.message)
