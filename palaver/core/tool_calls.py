"""Calls in the Hermes format: written into a prompt for templates that cannot, and read back out of a reply."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from palaver.core.tools import CALL_CLOSE, CALL_OPEN, call_head
from palaver.core.types import Message, Reply, ReplyEvents, ToolCall, ToolCallDelta

# The generic format, for chat templates that do not render tools: the instructions Hermes-format models know.
TOOLS_SYSTEM_TEXT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
CALL_HEAD = re.compile(re.escape(CALL_OPEN) + r'\n\{"name": "([A-Za-z0-9_-]+)", "arguments": ')


def written_call(call: ToolCall) -> str:
    """Return a call as the model writes one."""
    return f"{call_head(call.name)}{call.arguments}{CALL_CLOSE}"


def text_messages(messages: list[Message], tools: list[dict[str, Any]] | None) -> list[Message]:
    """Return messages with tools, calls and results written as text, for a template that knows only roles."""
    shaped: list[Message] = []
    if tools:
        listing = TOOLS_SYSTEM_TEXT.format(tools="\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools))
        system = [m.content for m in messages if m.role == "system"]
        shaped.append(Message("system", "\n\n".join([*system, listing])))
        messages = [m for m in messages if m.role != "system"]
    for message in messages:
        if message.tool_calls:
            calls = "\n".join(written_call(call) for call in message.tool_calls)
            shaped.append(Message("assistant", f"{message.content}\n{calls}" if message.content else calls))
        elif message.role == "tool":
            result = f"<tool_response>\n{message.content}\n</tool_response>"
            if shaped and shaped[-1].role == "user" and shaped[-1].content.startswith("<tool_response>"):
                # Results of one turn's calls go together in one user turn, as Hermes-format templates put them.
                shaped[-1] = Message("user", f"{shaped[-1].content}\n{result}")
            else:
                shaped.append(Message("user", result))
        else:
            shaped.append(message)
    return shaped


def template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Return messages as chat templates that render tools expect them: a call's arguments as an object."""
    shaped = []
    for message in messages:
        entry = message.as_dict()
        if message.tool_calls:
            entry["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments(call)}}
                for call in message.tool_calls
            ]
        shaped.append(entry)
    return shaped


def arguments(call: ToolCall) -> Any:
    """Return a call's arguments as an object where they parse, as the text they are where they do not."""
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


class CallReader:
    """Read a reply's text as it streams: pass an answer on as text, and turn calls into ToolCallDeltas."""

    def __init__(self) -> None:
        self.pending = ""
        self.calling: bool | None = None  # unknown until the reply's start shows whether it opens a call
        self.calls: list[ToolCall] = []
        self.head: tuple[str, str] | None = None  # the open call's id and name, once its head is read
        self.arguments_sent = 0

    def feed(self, text: str) -> Iterator[str | ToolCallDelta]:
        """Yield the answer's text, or the parts of the calls, that text completes."""
        self.pending += text
        if self.calling is None:
            if CALL_OPEN.startswith(self.pending):
                return  # it may yet open a call
            self.calling = self.pending.startswith(CALL_OPEN)
        if not self.calling:
            text, self.pending = self.pending, ""
            yield text
            return
        yield from self._read_calls()

    def _read_calls(self) -> Iterator[ToolCallDelta]:
        while True:
            if self.head is None:
                head = CALL_HEAD.match(self.pending.lstrip("\n"))
                if head is None:
                    return
                self.head = (f"call_{uuid.uuid4().hex[:24]}", head.group(1))
                self.pending, self.arguments_sent = self.pending.lstrip("\n")[head.end() :], 0
                yield ToolCallDelta(len(self.calls), self.head[0], self.head[1], "")
            end = self.pending.find(CALL_CLOSE)
            # Arguments stream as they come, holding back what may be the start of the closing tag.
            ready = len(self.pending) - len(CALL_CLOSE) + 1 if end < 0 else end
            if ready > self.arguments_sent:
                yield ToolCallDelta(len(self.calls), None, None, self.pending[self.arguments_sent : ready])
                self.arguments_sent = ready
            if end < 0:
                return
            call_id, name = self.head
            self.calls.append(ToolCall(call_id, name, self.pending[:end]))
            self.pending, self.head = self.pending[end + len(CALL_CLOSE) :], None

    def cut_off(self) -> Iterator[str | ToolCallDelta]:
        """End a reply that max_tokens cut off: text goes on as text, and a named call ends where it was cut."""
        # As OpenAI reports a cut call: with the arguments written so far. A call not yet named was never sent.
        if not self.calling:
            text, self.pending = self.pending, ""
            if text:
                yield text
        elif self.head is not None:
            written = without_closing(self.pending)
            if len(written) > self.arguments_sent:
                yield ToolCallDelta(len(self.calls), None, None, written[self.arguments_sent :])
            self.calls.append(ToolCall(self.head[0], self.head[1], written))
            self.pending, self.head = "", None


def without_closing(arguments: str) -> str:
    """Return a cut call's arguments without the start of its closing tag, where it had begun."""
    for size in range(min(len(CALL_CLOSE) - 1, len(arguments)), 0, -1):
        if arguments.endswith(CALL_CLOSE[:size]):
            # A lone "}" may close the arguments themselves; it closes the call only if they are whole without it.
            return arguments[:-size] if size > 1 or whole_json(arguments[:-size]) else arguments
    return arguments


def whole_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def read_calls(events: ReplyEvents) -> ReplyEvents:
    """Turn a reply's Hermes-format calls into ToolCallDeltas, and its Reply into one that holds them."""
    reader = CallReader()
    for item in events:
        if isinstance(item, str):
            yield from reader.feed(item)
        elif isinstance(item, Reply):
            yield from reader.cut_off()
            text = "" if reader.calling else item.text
            ended = "tool_calls" if reader.calls and item.finish_reason == "stop" else item.finish_reason
            yield replace(item, text=text, tool_calls=tuple(reader.calls), finish_reason=ended)
        else:
            yield item  # the prompt's info, and logprobs
