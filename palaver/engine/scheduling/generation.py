"""What the engine works on and reports: each request's job, the stream that serves it, and the observer it tells."""

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
from palaver.core.requests import GenerationRequest
from palaver.core.types import REPLY_LISTENER, Message, PromptInfo, Reply, ReplyEvents, Usage

if TYPE_CHECKING:
    from palaver.engine.decoding.constraints import Constraint
    from palaver.engine.prompting.model_family import Prompt

FINISHED = object()  # the last item a job's delta queue receives
POLL_SECONDS = 0.25  # how often a waiting request checks whether its client is still there


@dataclass(eq=False)  # a job is itself: compared and hashed by identity
class Job:
    """A backend's work on one request: its inputs as built for the model, and where its text and its reply go."""

    request: GenerationRequest
    built: Prompt | None = None  # token ids, built on the caller's thread before queueing
    constraint: Constraint | None = None  # the request's grammar compiled for the model, on the caller's thread too
    result: Future[Reply] = field(default_factory=Future)
    deltas: queue.Queue[Any] = field(default_factory=queue.Queue)
    queued_at: float = 0.0

    @property
    def params(self) -> GenerationParams:
        return self.request.params

    @property
    def messages(self) -> list[Message] | None:
        return self.request.messages

    @property
    def cancelled(self) -> threading.Event:
        """Return the request's cancel flag, which its caller may set at any time."""
        return self.request.cancelled

    @property
    def client(self) -> str:
        """Return the client whose share this job takes: the engine serves clients round-robin."""
        return self.request.client

    def cancel(self) -> None:
        """Stop the job: the worker skips or stops it, and one not started yet never gets a result."""
        self.request.cancel()
        self.result.cancel()

    def reserve_tokens(self, most: int) -> None:
        """Reserve most tokens of the caller's budget, or raise; the reply's real count settles it once it ends."""
        reserve = self.request.caller.reserve
        if reserve is None:
            return
        settle = reserve(most)
        # Settled when the engine finishes the row, even after its client has left: what ran is what is charged.
        self.result.add_done_callback(lambda result: settle(generated_tokens(result)))


def generated_tokens(result: Future[Reply]) -> int:
    """Return how many tokens a finished request generated: none if it was cancelled before starting or failed."""
    if result.cancelled() or result.exception() is not None:
        return 0
    return result.result().usage.completion_tokens


def serve(
    job: Job, start: Callable[[], PromptInfo], timeout: float, stop: Callable[[], None] | None = None
) -> ReplyEvents:
    """Start a job; yield its PromptInfo, its text as it comes, then its Reply; however the stream ends, it stops.

    start builds and queues the job, or raises, before anything ran, an error that keeps its status. stop, if
    given, ends the work itself once the job is cancelled (an upstream's open stream); the engine's worker sees
    the flag on its own.
    """
    try:
        info = start()
    except BaseException:
        job.result.cancel()  # settles a reservation already made: nothing was generated
        raise

    def stop_if_cancelled() -> None:
        if stop is not None and job.cancelled.is_set():
            stop()

    try:
        yield info
        yield from follow(job, timeout, stop_if_cancelled)
    finally:
        if not job.result.done():  # the client left, or time ran out: no work continues for nobody
            job.cancel()
            if stop is not None:
                stop()


def follow(job: Job, timeout: float, poll: Callable[[], None] | None = None) -> Generator[Any, None, None]:
    """Yield a queued job's text as it comes, then its Reply; stop it if its client leaves or time runs out."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + POLL_SECONDS
    client_gone = job.request.client_gone
    try:
        while True:
            try:
                item = job.deltas.get(timeout=POLL_SECONDS)
            except queue.Empty:
                item = None
            if time.monotonic() >= next_check:  # on a clock: deltas may arrive faster than the poll
                if client_gone is not None and client_gone():
                    job.cancel()
                    raise ClientDisconnected("the client disconnected")
                if time.monotonic() > deadline:
                    job.cancel()
                    raise GenerationTimeout(f"generation took longer than {timeout:g} seconds and was stopped")
                if poll is not None:
                    poll()
                next_check = time.monotonic() + POLL_SECONDS
            if item is None:
                continue
            if item is FINISHED:
                # Stopped while still queued (by its caller's flag, too), there is no reply; otherwise this raises
                # the job's error.
                if not job.result.done():
                    job.result.cancel()
                cancelled = job.result.cancelled()
                reply = Reply("", Usage(0, 0), 0, "cancelled") if cancelled else job.result.result()
                listener = REPLY_LISTENER.get()
                if listener is not None:
                    listener(reply)
                yield reply
                return
            yield item
    finally:
        if not job.result.done():
            job.cancel()  # the consumer left early: no work continues for nobody


class Observer:
    """What the engine reports as it works; metrics implement it, and the default ignores it all."""

    def first_text(self, seconds: float) -> None:
        """A request produced its first text this many seconds after it was queued."""

    def step(self, batch_size: int) -> None:
        """The worker ran a generation step for this many requests together."""

    def finished(self, reply: Reply) -> None:
        """A request finished with this reply."""
