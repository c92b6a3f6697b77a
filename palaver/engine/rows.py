"""A request inside a batch: its prompt, what it generated, and how it streams (the same for every kind of batch)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from palaver.core.parameters import GenerationParams
from palaver.core.types import Reply, Usage
from palaver.engine.constraints import masked
from palaver.engine.sampling import Sampler
from palaver.engine.streaming import ReplyStream

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
    constraint: Any = None  # an llguidance matcher that the reply must satisfy, or None
    sampler: Sampler = field(init=False)
    generated: list[int] = field(default_factory=list)
    error: Exception | None = None  # why this row failed; its neighbours in the batch go on

    def __post_init__(self):
        self.sampler = Sampler(self.params)

    def accept(self, logits: Any) -> None:
        """Choose the next token from logits and hand it to the stream; a failure ends only this row."""
        try:
            if self.constraint is not None:
                logits = masked(logits, self.constraint)
            token = self.sampler.choose(logits, self.prompt_ids + self.generated)
            if self.constraint is not None and not self.constraint.consume_token(token):
                raise ValueError(f"the grammar refused token {token}: {self.constraint.get_error()}")
            self.generated.append(token)
            self.stream.add(token)
        except Exception as exc:
            log.exception("a row failed while choosing its next token")
            self.error = exc

    @property
    def complete(self) -> bool:
        """Whether the reply's grammar is complete: it can take no token but the end."""
        return self.constraint is not None and self.constraint.is_stopped()

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
        return Reply(self.stream.text, Usage(len(self.prompt_ids), len(self.generated)), self.truncated_turns, reason)
