"""A streamed response as the Responses API streams one: numbered, named events, item by item."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from palaver.core.errors import PalaverError
from palaver.core.types import ReasoningDelta, Reply, ReplyEvents, ToolCallDelta
from palaver.web.responses.items import call_item_id, new_item_id, reasoning_item_id
from palaver.web.responses.response_schemas import (
    FunctionCall,
    ItemStatus,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningText,
    ResponseObject,
    reply_status,
)
from palaver.web.sse import guarded, sse_event

Event = dict[str, Any]


class Sequence:
    """Frame events under their type's name, each with the next sequence_number."""

    def __init__(self) -> None:
        self.number = 0

    def frame(self, event: Event) -> str:
        payload = {**event, "sequence_number": self.number}
        self.number += 1
        return sse_event(payload, payload["type"])


def response_event(kind: str, response: ResponseObject) -> Event:
    return {"type": f"response.{kind}", "response": response.model_dump()}


Item = ReasoningItem | OutputMessage | FunctionCall


class Output:
    """The output items as they stream: one is open at a time, the reasoning, the message's text or a function call."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.index = -1
        self.open: Item | None = None
        self.written = ""  # the open item's reasoning or text, or the open call's arguments, so far
        self.messages = 0

    def reasoning(self, text: str) -> Iterator[Event]:
        if not isinstance(self.open, ReasoningItem):
            yield from self.close("completed")
            item_id = reasoning_item_id(self.message_id)
            yield from self._start(ReasoningItem(id=item_id, status="in_progress", content=[]))
            yield {**self._at(), "type": "response.content_part.added", "part": ReasoningText(text="").model_dump()}
        self.written += text
        yield {**self._at(), "type": "response.reasoning_text.delta", "delta": text}

    def text(self, text: str) -> Iterator[Event]:
        if not isinstance(self.open, OutputMessage):
            yield from self.close("completed")
            message_id = self.message_id if not self.messages else new_item_id("message")  # a reply has one
            self.messages += 1
            yield from self._start(OutputMessage(id=message_id, status="in_progress", content=[]))
            yield {**self._at(), "type": "response.content_part.added", "part": OutputText(text="").model_dump()}
        self.written += text
        yield {**self._at(), "type": "response.output_text.delta", "delta": text, "logprobs": []}

    def call(self, delta: ToolCallDelta) -> Iterator[Event]:
        if delta.id is not None:  # a call's first part: its id and name open an item of its own
            yield from self.close("completed")
            call = FunctionCall(
                id=call_item_id(delta.id), status="in_progress", call_id=delta.id, name=delta.name or "", arguments=""
            )
            yield from self._start(call)
        if delta.arguments and self.open is not None:
            self.written += delta.arguments
            yield {**self._at(), "type": "response.function_call_arguments.delta", "delta": delta.arguments}

    def close(self, status: ItemStatus) -> Iterator[Event]:
        """Close the open item, if any: its text's or arguments' done event, then output_item.done."""
        item = self.open
        if item is None:
            return
        done: Item
        if isinstance(item, (ReasoningItem, OutputMessage)):
            text = self.written
            part = OutputText(text=text) if isinstance(item, OutputMessage) else ReasoningText(text=text)
            yield {**self._at(), **text_done(part)}
            yield {**self._at(), "type": "response.content_part.done", "part": part.model_dump()}
            done = item.model_copy(update={"status": status, "content": [part]})
        else:
            yield {**self._at(), "type": "response.function_call_arguments.done", "arguments": self.written}
            done = item.model_copy(update={"status": status, "arguments": self.written})
        yield {"type": "response.output_item.done", "output_index": self.index, "item": done.model_dump()}
        self.open, self.written = None, ""

    def _start(self, item: Item) -> Iterator[Event]:
        self.index += 1
        self.open = item
        yield {"type": "response.output_item.added", "output_index": self.index, "item": item.model_dump()}

    def _at(self) -> Event:
        """Return where the open item's events point: its id and place (and for text, its one part)."""
        assert self.open is not None
        where: Event = {"item_id": self.open.id, "output_index": self.index}
        return where if isinstance(self.open, FunctionCall) else {**where, "content_index": 0}


def text_done(part: OutputText | ReasoningText) -> Event:
    """Return the event that ends an item's one part of text: the answer's (with its logprobs) or the reasoning's."""
    if isinstance(part, OutputText):
        return {"type": "response.output_text.done", "text": part.text, "logprobs": []}
    return {"type": "response.reasoning_text.done", "text": part.text}


def response_events(
    stream: ReplyEvents, started: ResponseObject, message_id: str, keep: Callable[[ResponseObject], None]
) -> Iterator[str]:
    """Frame a response: created, in_progress, each item's events, then completed or incomplete (kept first)."""
    sequence = Sequence()
    yield sequence.frame(response_event("created", started))
    yield sequence.frame(response_event("in_progress", started))
    output = Output(message_id)
    # Closing the stream cancels its generation, when the client goes away or an error ends it.
    with closing(stream):
        for item in guarded(stream):
            if isinstance(item, str):
                yield from map(sequence.frame, output.text(item))
            elif isinstance(item, ReasoningDelta):
                yield from map(sequence.frame, output.reasoning(item.text))
            elif isinstance(item, ToolCallDelta):
                yield from map(sequence.frame, output.call(item))
            elif isinstance(item, Reply):
                yield from map(sequence.frame, output.close(reply_status(item)))
                finished = started.finished(item, message_id)
                keep(finished)  # stored before the client hears it is done, so it can be continued at once
                yield sequence.frame(response_event(finished.status, finished))
            elif isinstance(item, PalaverError):  # an error after the stream began: an error event, then failed
                error = {"type": "error", "code": item.code or item.type, "message": item.message, "param": item.param}
                yield sequence.frame(error)
                yield sequence.frame(response_event("failed", started.failed(item)))
                return
