"""A request inside a batch: its prompt, what it generated, and how it streams (the same for every kind of batch)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from palaver.core.errors import PalaverError
from palaver.core.parameters import GenerationParams
from palaver.core.types import Reply, TokenLogprob, Usage
from palaver.engine.decoding.logprobs import token_logprob
from palaver.engine.decoding.sampling import Sampler
from palaver.engine.decoding.streaming import ReplyStream

log = logging.getLogger("palaver.engine")


@dataclass
class Row:
    """One request inside a batch: its prompt, what it generated, and how it streams."""

    prompt_ids: list[int]
    truncated_turns: int
    params: GenerationParams
    max_new_tokens: int
    stream: ReplyStream
    cancelled: threading.Event
    owner: Any = None  # whoever asked for this row, for the caller's bookkeeping
    constraint: Any = None  # the Constraint (constraints.py) that the reply must satisfy, or None
    token_bytes: list[bytes] | None = None  # each token's bytes, by id, where params.logprobs asks for them
    on_logprob: Callable[[TokenLogprob], None] | None = None
    think_open_id: int | None = None  # a thinking model's opening tag, which the grammar lets the reply start with
    sampler: Sampler = field(init=False)
    generated: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    error: Exception | None = None  # why this row failed; its neighbours in the batch go on

    def __post_init__(self):
        self.sampler = Sampler(self.params)

    def accept(self, logits: Any) -> None:
        """Choose the next token from logits and hand it to the stream; a failure ends only this row."""
        try:
            # A thinking model thinks freely: the grammar holds its answer, from the end of its thinking on.
            held = self.constraint if self.constraint is not None and not self.stream.in_reasoning else None
            opening = self.think_open_id is not None and self.stream.thinking  # the reply may yet open its thinking
            if held is not None:
                logits = self._masked(held, logits, opening)
            token = self.sampler.choose(logits, self.prompt_ids + self.generated)
            if held is not None and not (opening and token == self.think_open_id):
                held.consume(token)
            wanted = self.params.logprobs
            if wanted is not None and self.token_bytes is not None and token not in self.stream.stop_token_ids:
                # The distribution the step chose from: the model's, less what the grammar forbids.
                entry = token_logprob(logits, token, wanted, self.token_bytes)
                self.logprobs.append(entry)
                if self.on_logprob is not None:
                    self.on_logprob(entry)  # before the token's text, which the stream may yet hold back
            self.generated.append(token)
            self.stream.add(token)
        except Exception as exc:
            self._fail(exc)

    def forced_tokens(self, most: int) -> list[int]:
        """Return up to most tokens that the grammar allows alone next, to be taken without a step each."""
        held = self.constraint
        # Logprobs report each token's own distribution, which only its step computes; and a thinking model's
        # reply may yet open its thinking, which the grammar does not hold.
        if held is None or most <= 0 or self.params.logprobs is not None or self.stream.in_reasoning:
            return []
        if self.think_open_id is not None and self.stream.thinking:
            return []
        try:
            return held.forced(most)
        except Exception as exc:
            self._fail(exc)
            return []

    def take_forced(self, tokens: list[int]) -> list[int]:
        """Append tokens the grammar forces as if each were chosen, until the row ends; return those taken."""
        taken: list[int] = []
        for token in tokens:
            if self.done:
                break
            try:
                self.constraint.consume(token)
                self.sampler.skip()  # the random stream stays where choosing the token would have left it
                self.generated.append(token)
                self.stream.add(token)
            except Exception as exc:
                self._fail(exc)
                break
            taken.append(token)
        return taken

    def _fail(self, exc: Exception) -> None:
        """End only this row: a grammar that broke down is told to the client, anything else is logged whole."""
        if isinstance(exc, PalaverError):  # the client hears why; no traceback to log
            log.warning("a row ended with an error: %s", exc.message)
        else:
            log.exception("a row failed while choosing its next token", exc_info=exc)
        self.error = exc

    def _masked(self, constraint: Any, logits: Any, opening: bool) -> Any:
        """Return logits masked by the grammar; where the reply may yet open its thinking, its tag stays allowed."""
        masked = constraint.mask(logits)
        if opening and self.think_open_id is not None:
            masked[self.think_open_id] = float(logits[self.think_open_id])
        return masked

    @property
    def complete(self) -> bool:
        """Whether the reply's grammar is complete: it can take no token but the end."""
        return self.constraint is not None and not self.stream.in_reasoning and self.constraint.is_stopped()

    @property
    def done(self) -> bool:
        return (
            self.error is not None
            or self.stream.stopped
            or self.complete
            or self.cancelled.is_set()
            or len(self.generated) >= self.max_new_tokens
        )

    def reply(self) -> Reply:
        """Flush the stream and describe how the reply ended."""
        self.stream.end()
        ended = self.stream.stopped or self.complete
        reason = "cancelled" if self.cancelled.is_set() else "stop" if ended else "length"
        logprobs = tuple(self.logprobs) if self.params.logprobs is not None else None
        usage = Usage(len(self.prompt_ids), len(self.generated), self.stream.reasoning_tokens)
        stop, reasoning = self.stream.matched_stop, self.stream.reasoning
        return Reply(
            self.stream.text,
            usage,
            self.truncated_turns,
            reason,
            logprobs=logprobs,
            stop_sequence=stop,
            reasoning=reasoning,
        )
