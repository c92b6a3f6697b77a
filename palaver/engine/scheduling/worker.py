"""One model's worker loop: admit queued requests into the running batch, step it, finish rows as they end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from queue import Queue
from typing import TYPE_CHECKING, Any

from palaver.core.config import Settings
from palaver.core.errors import GenerationFailed, PalaverError
from palaver.core.types import ReasoningDelta
from palaver.engine.scheduling.embedding import EmbeddingJob, EmbeddingWork
from palaver.engine.scheduling.fair_queue import FairQueue
from palaver.engine.scheduling.generation import FINISHED, Job, Observer
from palaver.engine.scheduling.in_flight import InFlight
from palaver.engine.scheduling.request_inputs import RequestInputs
from palaver.engine.scheduling.turns import StepTurns

if TYPE_CHECKING:
    from palaver.engine.contracts import Batch
    from palaver.engine.decoding.prefix_cache import PrefixCache
    from palaver.engine.decoding.rows import Row
    from palaver.engine.prompting.model_family import ModelFamily

log = logging.getLogger("palaver.engine")


class BatchWorker:
    """Run a loaded model's continuous batch on the engine's thread, each step taken in turn with other models."""

    def __init__(
        self,
        family: ModelFamily,
        settings: Settings,
        queue: FairQueue,
        turns: StepTurns,
        observer: Observer,
        admission: InFlight,
        inputs: Callable[[], RequestInputs],
    ):
        self.family, self.settings, self.queue, self.turns = family, settings, queue, turns
        self.observer, self.admission, self.inputs = observer, admission, inputs
        self.counts = admission.counts
        self.embeddings = EmbeddingWork(admission, self.counts)  # texts to embed, a group between two steps
        # Text and logprobs chosen in a step, handed to their request threads together once the step's rows are done:
        # a thread woken per token contended for the interpreter with the rows still being chosen.
        self.held: list[tuple[Queue, Any]] = []

    def run(self) -> None:
        """Run the batch: admit queued requests at each step, decode, and finish rows as they end."""
        from palaver.engine.decoding.prefix_cache import PrefixCache

        family = self.family
        prefix_cache = (
            PrefixCache(self.settings.prefix_cache_tokens, self.counts) if self.settings.prefix_cache_tokens else None
        )
        batch = family.start_batch(prefix_cache)
        while True:
            joining = []
            idle = not batch.rows and not self.embeddings.jobs
            room = self.settings.max_batch_size - len(batch.rows) - len(self.embeddings.jobs)
            for request in self.queue.take(block=idle, limit=room):
                if request is None:
                    self.embeddings.abandon()
                    batch.release()  # the native step's batches own KV pages
                    return
                if isinstance(request, EmbeddingJob):
                    self.embeddings.add(request)
                    continue
                joining += self._admit(request)
            if joining:
                with self.turns.turn():
                    batch = self._join(joining, batch, family, prefix_cache)
            if batch.rows:
                self.observer.step(len(batch.rows))
                try:
                    with self.turns.turn():
                        batch.step()
                except Exception:
                    log.exception("a generation step failed")
                    failed = list(batch.rows)
                    batch = self._replace(batch, family, prefix_cache)  # freed before the callers hear of it
                    for row in failed:
                        self._fail(row.owner, GenerationFailed())
                    continue
            if self.embeddings.jobs:
                with self.turns.turn():
                    self.embeddings.run_next(batch)
            self._hand_on_held()
            for row in batch.remove_done():
                self._complete(row)

    def _admit(self, request: Job) -> list:
        """Build the request's batch row, or finish the request at once; return the rows that join."""
        if request.cancelled.is_set() or not request.result.set_running_or_notify_cancel():
            self.counts["cancelled_before_start"] += 1
            self._finish(request)
            return []
        try:
            return [self._row(request)]
        except PalaverError as exc:
            self._fail(request, exc)
        except Exception:
            log.exception("starting a generation failed")
            self._fail(request, GenerationFailed())
        return []

    def _join(self, rows: list[Row], batch: Batch, family: ModelFamily, prefix_cache: PrefixCache | None) -> Batch:
        """Prefill rows that arrived together; return the batch to go on with."""
        try:
            batch.add_many(rows)
            return batch
        except Exception:
            log.exception("starting a generation failed")
        # Some rows may have joined before the failure, so the batch can no longer be trusted.
        entered = any(row in batch.rows or row in batch.finished_early for row in rows)
        failed = rows + ([row for row in batch.rows if row not in rows] if entered else [])
        fresh = self._replace(batch, family, prefix_cache) if entered else batch
        for row in failed:
            self._fail(row.owner, GenerationFailed())
        return fresh

    def _replace(self, batch: Batch, family: ModelFamily, prefix_cache: PrefixCache | None) -> Batch:
        """Start a fresh batch in place of one that can no longer be trusted, freeing what it held."""
        batch.release()  # the native step's batches own KV pages
        return family.start_batch(prefix_cache)

    def _row(self, request: Job):
        family = self.family
        is_chat = request.messages is not None
        prompt = request.built
        assert prompt is not None  # built on the request's own thread before it was queued
        first_text: list[bool] = []

        def hand_on(text: str | ReasoningDelta) -> None:
            if not first_text:  # a thinking model's first words are its reasoning's
                first_text.append(True)
                self.observer.first_text(time.monotonic() - request.queued_at)
            self.held.append((request.deltas, text))

        row = family.new_row(
            prompt,
            request.params,
            request.cancelled,
            hand_on,
            strip_leading=is_chat,
            on_reasoning=lambda text: hand_on(ReasoningDelta(text)),
        )
        row.owner, row.constraint = request, request.constraint
        if request.params.logprobs is not None:
            row.token_bytes = self.inputs().constraints().token_bytes()
            row.on_logprob = lambda entry: self.held.append((request.deltas, entry))
        return row

    def _complete(self, row) -> None:
        if row.error is not None:  # an error meant for the client (a grammar that broke down) reaches it as is
            self._fail(row.owner, row.error if isinstance(row.error, PalaverError) else GenerationFailed())
            return
        request, reply = row.owner, row.reply()
        self.counts[reply.finish_reason] += 1
        self.counts["generated_tokens"] += reply.usage.completion_tokens
        self.observer.finished(reply)
        request.result.set_result(reply)
        self._finish(request)

    def _fail(self, request: Job, error: PalaverError) -> None:
        request.result.set_exception(error)
        self._finish(request)

    def _finish(self, request: Job) -> None:
        self.admission.finished()
        self._hand_on_held()  # a request's text comes before its end
        request.deltas.put(FINISHED)  # the waiter, if any, learns at once

    def _hand_on_held(self) -> None:
        held, self.held = self.held, []
        for deltas, item in held:
            deltas.put(item)
