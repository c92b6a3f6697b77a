"""Turn generated tokens into text deltas as they arrive, cutting the reply at stop sequences."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from palaver.core.reasoning import ReasoningSplitter

INCOMPLETE_CHARACTER = "\ufffd"


class ReplyStream:
    """Decode tokens incrementally and hand on text that can no longer change.

    Decoding a growing token list can rewrite its tail (a multi-byte character split across
    tokens, a word piece), so each step decodes from a recent offset and emits only the part
    past the previous read offset, as vLLM does. Text that might begin a stop sequence is held
    back until it is clearly not one. A thinking model's reasoning, when a splitter is given, goes to
    on_reasoning instead, and stop sequences apply to the answer alone.
    """

    def __init__(
        self,
        tokenizer,
        stop_token_ids: Sequence[int],
        stop_sequences: Sequence[str] = (),
        on_text: Callable[[str], None] | None = None,
        strip_leading: bool = True,
        splitter: ReasoningSplitter | None = None,
        on_reasoning: Callable[[str], None] | None = None,
        spelled: Mapping[int, str] | None = None,
    ):
        self.strip_leading = strip_leading  # chat replies drop it; raw completions keep " Paris"
        self.splitter, self.on_reasoning = splitter, on_reasoning
        self.spelled = dict(spelled or {})  # tokens that decoding drops (a think tag marked special), as text
        self.tokenizer = tokenizer
        self.stop_token_ids = set(stop_token_ids)
        self.stop_sequences = [s for s in stop_sequences if s]
        self.on_text = on_text
        self.tokens: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.decoded = ""  # all text decoded so far (the answer's, past a splitter), before stop sequences are applied
        self.text = ""  # the reply text handed on so far
        self.reasoning = ""  # the reasoning handed on so far
        self.reasoning_tokens = 0  # the tokens up to the end of the thinking, or all of them while it lasts
        self.hit_stop_token = False
        self.matched_stop: str | None = None  # the stop sequence that ended the reply, once one has

    @property
    def stopped(self) -> bool:
        return self.hit_stop_token or self.matched_stop is not None

    def add(self, token: int) -> None:
        """Receive the next generated token."""
        if self.stopped:
            return
        if token in self.stop_token_ids:
            self.hit_stop_token = True
        elif token in self.spelled:
            self._flush_partial()
            self.tokens.append(token)
            self.prefix_offset = self.read_offset = len(self.tokens)
            self._take(self.spelled[token])
        else:
            self.tokens.append(token)
            self._decode_new_token()
        self._emit(final=self.stopped)

    def end(self) -> None:
        """Flush whatever is held back once generation ends."""
        self._flush_partial()
        self._emit(final=True)

    @property
    def thinking(self) -> bool:
        """Whether the reply's answer has not begun: it is inside a thinking model's reasoning, or may open it."""
        return self.splitter is not None and self.splitter.thinking

    @property
    def in_reasoning(self) -> bool:
        """Whether the reply is inside a thinking model's reasoning, where no grammar holds it."""
        return self.splitter is not None and self.splitter.in_reasoning

    def _flush_partial(self) -> None:
        if self.read_offset < len(self.tokens):  # a trailing partial character, decoded as it is
            before = self._decode(self.prefix_offset, self.read_offset)
            self._take(self._decode(self.prefix_offset)[len(before) :])
            self.read_offset = len(self.tokens)

    def _take(self, text: str, final: bool = False) -> None:
        """Add newly decoded text: to the answer, or, past a splitter, to the reasoning or the answer."""
        if self.splitter is None:
            self.decoded += text
            return
        was_thinking = self.splitter.thinking
        reasoning, answer = self.splitter.finish() if final else self.splitter.feed(text)
        if reasoning:
            self.reasoning += reasoning
            if self.on_reasoning is not None:
                self.on_reasoning(reasoning)
        if was_thinking:  # the tokens so far are the reasoning's while it lasts, and those that ended it
            self.reasoning_tokens = len(self.tokens) if self.splitter.thinking or self.splitter.thought else 0
        self.decoded += answer

    def _decode(self, start: int, end: int | None = None) -> str:
        return self.tokenizer.decode(self.tokens[start:end], skip_special_tokens=True)

    def _decode_new_token(self) -> None:
        before = self._decode(self.prefix_offset, self.read_offset)
        after = self._decode(self.prefix_offset)
        if len(after) > len(before) and not after.endswith(INCOMPLETE_CHARACTER):
            self._take(after[len(before) :])
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)

    def _emit(self, final: bool) -> None:
        if final and self.splitter is not None:
            self._take("", final=True)
        reply = self.decoded.lstrip() if self.strip_leading else self.decoded
        hits = [(at, stop) for stop in self.stop_sequences if (at := reply.find(stop)) >= 0]
        if hits:
            cut, self.matched_stop = min(hits, key=lambda hit: hit[0])
            reply, final = reply[:cut], True
        end = len(reply) if final else len(reply) - self._held_back(reply)
        delta = reply[len(self.text) : end]
        if delta:
            self.text += delta
            if self.on_text is not None:
                self.on_text(delta)

    def _held_back(self, reply: str) -> int:
        """Return the length of the longest tail of reply that could start a stop sequence."""
        longest = 0
        for stop in self.stop_sequences:
            for size in range(min(len(stop) - 1, len(reply)), longest, -1):
                if reply.endswith(stop[:size]):
                    longest = size
                    break
        return longest
