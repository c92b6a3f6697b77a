"""A thinking model's reasoning kept apart from its answer: the think tags read out of a reply as it streams."""

from __future__ import annotations

from enum import Enum

OPEN_TAG, CLOSE_TAG = "<think>", "</think>"  # as Qwen3, QwQ, DeepSeek-R1's distills and SmolLM3 write them


class Part(Enum):
    OPENING = "opening"  # the reply's start, which may open the thinking
    REASONING = "reasoning"
    ANSWER = "answer"


class ReasoningSplitter:
    """Split a reply's text, as it streams, into the reasoning inside its think tags and the answer after them.

    Text is held back only while it could still be the start of a tag, or is whitespace at the reasoning's edges
    (which is dropped). inside: the prompt opened the thinking, so the reply starts inside it.
    """

    def __init__(self, inside: bool = False):
        self.inside = inside
        self.part = Part.OPENING
        self.pending = ""
        self.reasoned = False  # whether any reasoning was handed on: its leading whitespace is dropped until then
        self.thought = inside  # whether the reply has been inside its thinking

    @property
    def thinking(self) -> bool:
        """Whether the answer has not begun: the reply is inside its thinking, or may yet open it."""
        return self.part is not Part.ANSWER

    @property
    def in_reasoning(self) -> bool:
        """Whether the reply is inside its thinking, or starts there: no grammar holds it yet."""
        return self.part is Part.REASONING or (self.part is Part.OPENING and self.inside)

    def feed(self, text: str) -> tuple[str, str]:
        """Return the reasoning and the answer that text completes; what could still be a tag waits."""
        self.pending += text
        reasoning = answer = ""
        if self.part is Part.OPENING:
            start = self.pending.lstrip()
            if not start or (OPEN_TAG.startswith(start) and start != OPEN_TAG):
                return "", ""  # it may yet open the thinking
            if start.startswith(OPEN_TAG):
                self.part, self.pending, self.thought = Part.REASONING, start[len(OPEN_TAG) :], True
            else:
                self.part = Part.REASONING if self.inside else Part.ANSWER
        if self.part is Part.REASONING:
            reasoning = self._read_reasoning()
        if self.part is Part.ANSWER:
            answer, self.pending = self.pending, ""
        return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """Return what was held back once the reply ends: a cut-off reasoning's last words, or a lone '<thi'."""
        held, self.pending = self.pending, ""
        if self.part is Part.OPENING and not self.inside:
            self.part = Part.ANSWER
            return "", held
        if self.part is Part.OPENING:
            self.part = Part.REASONING
        return self._trimmed(held.rstrip()), ""

    def _read_reasoning(self) -> str:
        end = self.pending.find(CLOSE_TAG)
        if end >= 0:
            reasoning = self._trimmed(self.pending[:end].rstrip())
            self.part, self.pending = Part.ANSWER, self.pending[end + len(CLOSE_TAG) :]
            return reasoning
        ready = len(self.pending) - tag_start(self.pending, CLOSE_TAG)
        ready = len(self.pending[:ready].rstrip())  # trailing whitespace waits: it is dropped if the thinking ends
        reasoning, self.pending = self._trimmed(self.pending[:ready]), self.pending[ready:]
        return reasoning

    def _trimmed(self, reasoning: str) -> str:
        if not self.reasoned:
            reasoning = reasoning.lstrip()
            self.reasoned = bool(reasoning)
        return reasoning


def tag_start(text: str, tag: str) -> int:
    """Return the length of the longest end of text that could begin tag."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
