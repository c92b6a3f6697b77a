"""What the engine works on and reports: the request it queues, and the observer it tells as it goes."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from palaver.core.errors import ClientDisconnected, GenerationTimeout
from palaver.core.parameters import GenerationParams
from palaver.core.tools import ToolUse
from palaver.core.types import CALLER, REPLY_LISTENER, Caller, Message, Reply, Usage

if TYPE_CHECKING:
    from palaver.engine.prompting.model_family import Prompt

FINISHED = object()  # the last item a request's delta queue receives
POLL_SECONDS = 0.25  # how often a waiting request checks whether its client is still there


@dataclass(eq=False)  # a request is itself: compared and hashed by identity
class GenerationRequest:
    """One unit of work: its inputs, a way to hand back text and the reply, and a cancel flag."""

    params: GenerationParams
    messages: list[Message] | None = None  # a conversation (its preset applied), formatted by the model's family...
    prompt: str | None = None  # ...or a raw completion prompt
    tools: ToolUse | None = None  # functions a chat's reply may call
    model: str | None = None  # the configured model's name that serves it; None: the default
    client_gone: Callable[[], bool] | None = None
    built: Prompt | None = None  # token ids, built on the caller's thread before queueing
    constraint: Any = None  # the Constraint for params.json_schema or tools, compiled on the caller's thread too
    result: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    deltas: queue.Queue = field(default_factory=queue.Queue)
    queued_at: float = 0.0
    caller: Caller = field(default_factory=CALLER.get)  # whose request it is, as the view that made it knew

    @property
    def client(self) -> str:
        """Return the client whose share this request takes: the engine serves clients round-robin."""
        return self.caller.client

    def cancel(self) -> None:
        """Ask the worker to skip or stop this request."""
        self.cancelled.set()
        self.result.cancel()

    def reserve_tokens(self, most: int) -> None:
        """Reserve most tokens of the caller's budget, or raise; the reply's real count settles it once it ends."""
        reserve = self.caller.reserve
        if reserve is None:
            return
        settle = reserve(most)
        # Settled when the engine finishes the row, even after its client has left: what ran is what is charged.
        self.result.add_done_callback(lambda result: settle(generated_tokens(result)))


def generated_tokens(result: Future) -> int:
    """Return how many tokens a finished request generated: none if it was cancelled before starting or failed."""
    if result.cancelled() or result.exception() is not None:
        return 0
    return result.result().usage.completion_tokens


def follow(
    request: GenerationRequest, timeout: float, poll: Callable[[], None] | None = None
) -> Generator[str | Reply, None, None]:
    """Yield a queued request's text as it comes, then its Reply; stop it if its client leaves or time runs out."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + POLL_SECONDS
    try:
        while True:
            try:
                item = request.deltas.get(timeout=POLL_SECONDS)
            except queue.Empty:
                item = None
            if time.monotonic() >= next_check:  # on a clock: deltas may arrive faster than the poll
                if request.client_gone is not None and request.client_gone():
                    request.cancel()
                    raise ClientDisconnected("the client disconnected")
                if time.monotonic() > deadline:
                    request.cancel()
                    raise GenerationTimeout(f"generation took longer than {timeout:g} seconds and was stopped")
                if poll is not None:
                    poll()
                next_check = time.monotonic() + POLL_SECONDS
            if item is None:
                continue
            if item is FINISHED:
                # Stopped while still queued, there is no reply; otherwise this raises the request's error.
                cancelled = request.result.cancelled()
                reply = Reply("", Usage(0, 0), 0, "cancelled") if cancelled else request.result.result()
                listener = REPLY_LISTENER.get()
                if listener is not None:
                    listener(reply)
                yield reply
                return
            yield item
    finally:
        if not request.result.done():
            request.cancel()  # the consumer left early: no work continues for nobody


class Observer:
    """What the engine reports as it works; metrics implement it, and the default ignores it all."""

    def first_text(self, seconds: float) -> None:
        """A request produced its first text this many seconds after it was queued."""

    def step(self, batch_size: int) -> None:
        """The worker ran a generation step for this many requests together."""

    def finished(self, reply: Reply) -> None:
        """A request finished with this reply."""
