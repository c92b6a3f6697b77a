"""OpenAI's response objects as typed models: completions, their stream chunks, usage and the model list."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from palaver.core.types import Reply, TokenLogprob, ToolCall, ToolCallDelta, Usage

FinishReason = Literal["stop", "length", "tool_calls"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(reply: Reply) -> FinishReason:
    if reply.finish_reason in ("length", "tool_calls"):
        return reply.finish_reason  # type: ignore[return-value]
    return "stop"


class TopLogprobEntry(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class LogprobEntry(TopLogprobEntry):
    top_logprobs: list[TopLogprobEntry]

    @classmethod
    def of(cls, entry: TokenLogprob) -> LogprobEntry:
        return cls(
            token=entry.token,
            logprob=entry.logprob,
            bytes=list(entry.bytes),
            top_logprobs=[TopLogprobEntry(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in entry.top],
        )


class ChoiceLogprobs(BaseModel):
    content: list[LogprobEntry] | None
    refusal: None = None

    @classmethod
    def of(cls, entries: tuple[TokenLogprob, ...] | list[TokenLogprob] | None) -> ChoiceLogprobs | None:
        return None if entries is None else cls(content=[LogprobEntry.of(entry) for entry in entries])


class TextLogprobs(BaseModel):
    """The completions API's older shape: parallel lists, and each step's alternatives as a token-to-logprob map."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]

    @classmethod
    def of(cls, entries: tuple[TokenLogprob, ...] | list[TokenLogprob], offset: int, top: bool) -> TextLogprobs:
        offsets = []
        for entry in entries:
            offsets.append(offset)
            offset += len(entry.token)
        return cls(
            tokens=[entry.token for entry in entries],
            token_logprobs=[entry.logprob for entry in entries],
            top_logprobs=[{t.token: t.logprob for t in entry.top} for entry in entries] if top else None,
            text_offset=offsets,
        )


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCallObject(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallObject:
        return cls(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    truncated_turns: int = Field(0, description="Oldest messages left out of the prompt (a Palaver extension).")
    completion_tokens_details: CompletionTokensDetails | None = Field(None, exclude_if=lambda details: details is None)

    @classmethod
    def of(cls, usage: Usage, truncated_turns: int = 0) -> CompletionUsage:
        """Describe usage; a thinking model's reasoning tokens, counted in completion_tokens, are reported apart too."""
        details = CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens) if usage.reasoning_tokens else None
        return cls(**usage.as_dict(), truncated_turns=truncated_turns, completion_tokens_details=details)


def absent(value: str | None) -> bool:
    return value is None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    # A thinking model's reasoning: llama-server's and DeepSeek's name for it, and vLLM's.
    reasoning_content: str | None = Field(None, exclude_if=absent)
    reasoning: str | None = Field(None, exclude_if=absent)
    tool_calls: list[ToolCallObject] | None = Field(None, exclude_if=lambda calls: calls is None)

    @classmethod
    def of(cls, reply: Reply) -> AssistantMessage:
        """Describe a reply: its text, or its calls (and the text before them, if any), after its reasoning."""
        thought = reply.reasoning or None
        if not reply.tool_calls:
            return cls(content=reply.text, reasoning_content=thought, reasoning=thought)
        calls = [ToolCallObject.of(call) for call in reply.tool_calls]
        return cls(content=reply.text or None, reasoning_content=thought, reasoning=thought, tool_calls=calls)


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


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
        reasoning = sum(reply.usage.reasoning_tokens for reply in replies)
        usage = Usage(replies[0].usage.prompt_tokens, completion, reasoning)
        return cls(
            id=new_id("chatcmpl"),
            model=model,
            system_fingerprint=fingerprint,
            choices=[
                ChatChoice(
                    index=index,
                    message=AssistantMessage.of(reply),
                    logprobs=ChoiceLogprobs.of(reply.logprobs),
                    finish_reason=finish_reason(reply),
                )
                for index, reply in enumerate(replies)
            ],
            usage=CompletionUsage.of(usage, replies[0].truncated_turns),
        )


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str


class ToolCallDeltaObject(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta

    @classmethod
    def of(cls, delta: ToolCallDelta) -> ToolCallDeltaObject:
        """Describe part of a call: the first part of each carries its id, type and name."""
        kind: Literal["function"] | None = "function" if delta.id is not None else None
        return cls(
            index=delta.index,
            id=delta.id,
            type=kind,
            function=FunctionCallDelta(name=delta.name, arguments=delta.arguments),
        )


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = Field(None, exclude_if=absent)
    reasoning: str | None = Field(None, exclude_if=absent)
    tool_calls: list[ToolCallDeltaObject] | None = Field(None, exclude_if=lambda calls: calls is None)

    @classmethod
    def thought(cls, text: str) -> Delta:
        """Carry part of a thinking model's reasoning, under both of its names."""
        return cls(reasoning_content=text, reasoning=text)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


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
    logprobs: TextLogprobs | None = None
    finish_reason: FinishReason | None = None


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
    state: Literal["unloaded", "loading", "ready", "failed"]
    default: bool
    family: str | None  # the limits are known once the model has loaded
    context_length: int | None
    max_input_tokens: int | None
    max_output_tokens: int | None

    @classmethod
    def of(cls, described: dict) -> ModelCard:
        """Build a card from the router's description of one model."""
        limits = described.get("limits") or {}
        return cls(
            id=described["name"],
            created=int(limits.get("ready_at", 0)),
            state=described["state"],
            default=described["default"],
            family=limits.get("family"),
            context_length=limits.get("context_tokens"),
            max_input_tokens=limits.get("max_input_tokens"),
            max_output_tokens=limits.get("max_reply_tokens"),
        )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
