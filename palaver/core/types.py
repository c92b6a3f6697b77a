"""The shared vocabulary of the engine and the web layer: messages, usage, prompts and replies."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from contextlib import closing
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: the function's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Message:
    role: str  # system, user, assistant, or tool (a function's result)
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # the call a tool message answers

    def as_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # the reasoning's tokens among them, as OpenAI counts them
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class PromptInfo:
    """What a stream reports before its first text: the prompt's size and what was left out."""

    prompt_tokens: int
    truncated_turns: int


@dataclass(frozen=True)
class ModelLimits:
    """The served model as clients see it: its family and token limits, and when it became ready."""

    family: str
    ready_at: float
    context_tokens: int | None
    max_input_tokens: int | None
    max_reply_tokens: int | None


@dataclass(frozen=True)
class ModelSource:
    """What a local engine loads: weights (a .gguf file, a model directory or a hub id), and where its tokenizer is."""

    weights: str
    tokenizer: str  # the weights' own place, unless the model keeps it apart (an MLflow model's components)


@dataclass(frozen=True)
class TopLogprob:
    token: str
    bytes: tuple[int, ...]
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability, and the likeliest alternatives at its step."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """Part of a call as it streams: the first part of each call carries its id and name."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class ReasoningDelta:
    """Part of a thinking model's reasoning as it streams: the text between its think tags, apart from the answer."""

    text: str


@dataclass(frozen=True)
class Reply:
    text: str  # the answer: a thinking model's reasoning is never in it
    usage: Usage
    truncated_turns: int
    finish_reason: str  # "stop", "length", "tool_calls" or "cancelled"
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None  # when the request asked for them
    stop_sequence: str | None = None  # the stop sequence that ended it, where the engine saw one
    reasoning: str = ""  # a thinking model's reasoning, before its answer; all of the text when cut off inside it


# Whoever serves a request may set this, in the request's thread, to hear of every reply it produces.
REPLY_LISTENER: ContextVar[Callable[[Reply], None] | None] = ContextVar("reply_listener", default=None)

# Reserve up to n tokens of a budget (or raise); the callable it returns settles the reservation with the count used.
Reserve = Callable[[int], Callable[[int], None]]


@dataclass(frozen=True)
class Caller:
    """Who a generation is for: the client whose share its engine row takes, and the budget its tokens come from."""

    client: str = ""
    reserve: Reserve | None = None
    # A person's quotas: check a configured model is allowed (or raise) and return the caller as it spends on it.
    on_model: Callable[[str], Caller] | None = None

    def using(self, model: str) -> Caller:
        """Return the caller as it spends on a configured model, or refuse a model its quotas do not allow."""
        return self if self.on_model is None else self.on_model(model)


# Whoever serves a request sets this in the request's thread; generations started there are the caller's.
ANONYMOUS = Caller()
CALLER: ContextVar[Caller] = ContextVar("caller", default=ANONYMOUS)


class CallersRequest:
    """What a generation and an embedding request share: whose share they take, and a way to stop them."""

    caller: Caller
    cancelled: threading.Event

    @property
    def client(self) -> str:
        """Return the client whose share this request takes: the engine serves clients round-robin."""
        return self.caller.client

    def cancel(self) -> None:
        """Ask the backend to skip or stop this request."""
        self.cancelled.set()


# What a generation streams: its PromptInfo, then text deltas, then the Reply. A request that asked for them
# gets each token's TokenLogprob before its text, a request with tools gets its calls as ToolCallDeltas, and a
# thinking model's reasoning comes as ReasoningDeltas before the answer's text.
ReplyEvents = Generator[PromptInfo | str | ReasoningDelta | TokenLogprob | ToolCallDelta | Reply, None, None]
Final = TypeVar("Final")


def final(events: Generator[Any, None, None], kind: type[Final]) -> Final:
    """Read events to the end, closing them, and return the one of type kind (a Reply, or a ChatTurn)."""
    with closing(events):
        return next(item for item in events if isinstance(item, kind))
