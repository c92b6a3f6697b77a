"""A streamed reply as Anthropic's Messages API streams one: named events, block by block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any, Literal

from pydantic import BaseModel

from palaver.core.errors import PalaverError
from palaver.core.types import ReasoningDelta, Reply, ReplyEvents, ToolCallDelta
from palaver.web.anthropic.response_schemas import (
    ErrorResponse,
    MessagesResponse,
    StopReason,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    new_message_id,
    stop_reason,
    thinking_signature,
    tool_use_id,
)
from palaver.web.sse import guarded, sse_event


class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: MessagesResponse


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ThinkingBlock | TextBlock | ToolUseBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(BaseModel):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class StopDelta(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None


class OutputUsage(BaseModel):
    output_tokens: int


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: StopDelta
    usage: OutputUsage


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class Ping(BaseModel):
    type: Literal["ping"] = "ping"


def framed(event: BaseModel) -> str:
    """Frame an event under its type's name, as Anthropic's clients read them."""
    payload: dict[str, Any] = event.model_dump()
    return sse_event(payload, payload["type"])


class Blocks:
    """The reply's content blocks as they stream: one is open at a time, thinking, text or a tool_use."""

    def __init__(self) -> None:
        self.index = -1
        self.open: Literal["thinking", "text", "tool_use"] | None = None
        self.thought = ""  # the open thinking block's text, which its signature signs

    def thinking(self, text: str) -> Iterator[BaseModel]:
        if self.open != "thinking":
            yield from self._start(ThinkingBlock(thinking="", signature=""))
        self.thought += text
        yield ContentBlockDelta(index=self.index, delta=ThinkingDelta(thinking=text))

    def text(self, text: str) -> Iterator[BaseModel]:
        if self.open != "text":
            yield from self._start(TextBlock(text=""))
        yield ContentBlockDelta(index=self.index, delta=TextDelta(text=text))

    def tool(self, delta: ToolCallDelta) -> Iterator[BaseModel]:
        if delta.id is not None:  # a call's first part: its id and name open a block of its own
            yield from self._start(ToolUseBlock(id=tool_use_id(delta.id), name=delta.name or "", input={}))
        if delta.arguments:
            yield ContentBlockDelta(index=self.index, delta=InputJsonDelta(partial_json=delta.arguments))

    def close(self) -> Iterator[BaseModel]:
        if self.open == "thinking":  # a thinking block ends with its signature, as Anthropic's do
            yield ContentBlockDelta(index=self.index, delta=SignatureDelta(signature=thinking_signature(self.thought)))
            self.thought = ""
        if self.open is not None:
            yield ContentBlockStop(index=self.index)
            self.open = None

    def _start(self, block: ThinkingBlock | TextBlock | ToolUseBlock) -> Iterator[BaseModel]:
        yield from self.close()
        self.index += 1
        self.open = block.type
        yield ContentBlockStart(index=self.index, content_block=block)


def message_events(stream: ReplyEvents, model: str, input_tokens: int) -> Iterator[str]:
    """Frame a reply: message_start, a ping, each block's start, deltas and stop, message_delta, message_stop."""
    yield framed(MessageStart(message=MessagesResponse.started(model, new_message_id(), input_tokens)))
    yield framed(Ping())
    blocks = Blocks()
    # Closing the stream cancels its generation, when the client goes away or an error ends it.
    with closing(stream):
        for item in guarded(stream):
            if isinstance(item, ReasoningDelta):
                yield from map(framed, blocks.thinking(item.text))
            elif isinstance(item, str):
                yield from map(framed, blocks.text(item))
            elif isinstance(item, ToolCallDelta):
                yield from map(framed, blocks.tool(item))
            elif isinstance(item, Reply):
                yield from map(framed, blocks.close())
                ending = StopDelta(stop_reason=stop_reason(item), stop_sequence=item.stop_sequence)
                yield framed(MessageDelta(delta=ending, usage=OutputUsage(output_tokens=item.usage.completion_tokens)))
                yield framed(MessageStop())
            elif isinstance(item, PalaverError):  # an error after the stream began
                yield sse_event(ErrorResponse.of(item).model_dump(), "error")
                return
