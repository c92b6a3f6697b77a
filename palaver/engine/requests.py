"""What the engine works on and reports: the request it queues, and the observer it tells as it goes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from palaver.parameters import GenerationParams
from palaver.presets import Preset
from palaver.types import Message, Reply

if TYPE_CHECKING:
    from palaver.engine.families import Prompt


@dataclass
class GenerationRequest:
    """One unit of work: its inputs, a way to hand back text and the reply, and a cancel flag."""

    params: GenerationParams
    messages: list[Message] | None = None  # a conversation, formatted by the model's family...
    prompt: str | None = None  # ...or a raw completion prompt
    preset: Preset | None = None
    client_gone: Callable[[], bool] | None = None
    built: Prompt | None = None  # token ids, built on the caller's thread before queueing
    result: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    deltas: queue.Queue = field(default_factory=queue.Queue)
    queued_at: float = 0.0

    def cancel(self) -> None:
        """Ask the worker to skip or stop this request."""
        self.cancelled.set()
        self.result.cancel()


class Observer:
    """What the engine reports as it works; metrics implement it, and the default ignores it all."""

    def first_text(self, seconds: float) -> None:
        """A request produced its first text this many seconds after it was queued."""

    def step(self, batch_size: int) -> None:
        """The worker ran a generation step for this many requests together."""

    def finished(self, reply: Reply) -> None:
        """A request finished with this reply."""
