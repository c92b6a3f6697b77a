"""Embeddings on a model's worker: inputs as token ids, queued fairly with generations, run between their steps."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from palaver.core.embeddings import EmbeddingRequest, Embeddings
from palaver.core.errors import ClientDisconnected, GenerationFailed, GenerationTimeout, InvalidRequest, PalaverError
from palaver.engine.scheduling.generation import POLL_SECONDS
from palaver.engine.scheduling.in_flight import InFlight

if TYPE_CHECKING:
    from palaver.engine.contracts import Batch
    from palaver.engine.prompting.model_family import ModelFamily

log = logging.getLogger("palaver.engine")

# A job's tokens embedded between two steps (one input at least): the rows decoding beside it wait about as long as
# for a few prefill chunks, and many short inputs still share a pass.
GROUP_TOKENS = 512


def embedding_texts(family: ModelFamily, request: EmbeddingRequest) -> list[list[int]]:
    """Return each input's token ids for the model, checked; a refusal names the input (and the token) at fault.

    A text is tokenized as a completion's raw prompt is (with the tokenizer's BOS), ids are taken as they are. Each
    must fit the model's context: one that does not is cut to it if the request truncates, else refused.
    """
    size = family.model.embedding_size
    if request.dimensions is not None and request.dimensions != size:
        raise InvalidRequest(
            f"'dimensions' must be {size}, this model's embedding size: it does not shorten its vectors",
            param="dimensions",
        )
    limit, vocabulary = family.context_tokens, family.model.vocab_size or len(family.tokenizer)
    texts = []
    for index, given in enumerate(request.inputs):
        name = request.param.format(index=index)
        ids = family.embedding_ids(given) if isinstance(given, str) else list(given)
        wrong = next((position for position, token in enumerate(ids) if not 0 <= token < vocabulary), None)
        if wrong is not None:
            raise InvalidRequest(
                f"'{name}[{wrong}]' must be a token id from 0 to {vocabulary - 1}", param=f"{name}[{wrong}]"
            )
        if not ids:
            raise InvalidRequest(f"'{name}' has no tokens to embed", param=name)
        if len(ids) > limit and not request.truncate:
            raise InvalidRequest(
                f"'{name}' is too long for this model: {len(ids)} tokens, and it embeds at most {limit}",
                param=name,
                code="context_length_exceeded",
            )
        texts.append(family.cut_to(ids, limit) if len(ids) > limit else ids)
    return texts


def unit_vectors(means: np.ndarray) -> list[list[float]]:
    """Scale each row to length 1, its norm summed exactly (a row of zeros stays zeros); float32 values."""
    vectors = []
    for row in means.astype(np.float64):
        norm = math.sqrt(math.fsum(row * row))
        vectors.append((row / norm if norm > 0 else row).astype(np.float32).tolist())
    return vectors


@dataclass(eq=False)  # a job is itself: compared and hashed by identity
class EmbeddingJob:
    """A request's inputs as token ids, the vectors made of them so far, and where its answer goes."""

    request: EmbeddingRequest
    texts: list[list[int]]
    result: Future[Embeddings] = field(default_factory=Future)
    vectors: list[list[float]] = field(default_factory=list)
    embedded_tokens: int = 0  # what the model has read so far: what the caller's budget is charged

    @property
    def client(self) -> str:
        """Return the client whose share this job takes: the engine serves clients round-robin."""
        return self.request.client

    @property
    def finished(self) -> bool:
        return len(self.vectors) == len(self.texts)

    def next_group(self) -> list[list[int]]:
        """Return the inputs to embed next: at least one, and then as many as fit GROUP_TOKENS."""
        group: list[list[int]] = []
        tokens = 0
        for text in self.texts[len(self.vectors) :]:
            if group and tokens + len(text) > GROUP_TOKENS:
                break
            group.append(text)
            tokens += len(text)
        return group

    def accept(self, means: np.ndarray, group: list[list[int]]) -> None:
        """Take a group's vectors, in order."""
        self.vectors += unit_vectors(means)
        self.embedded_tokens += sum(len(text) for text in group)

    def reserve_tokens(self) -> None:
        """Reserve the inputs' tokens of the caller's budget, or raise; settled with what the model read."""
        reserve = self.request.caller.reserve
        if reserve is None:
            return
        settle = reserve(sum(len(text) for text in self.texts))
        self.result.add_done_callback(lambda _: settle(self.embedded_tokens))

    def cancel(self) -> None:
        """Stop the job: the worker skips it, or drops it between two groups."""
        self.request.cancel()
        self.result.cancel()

    def wait(self, timeout: float) -> Embeddings:
        """Wait for the vectors; stop the job if its client leaves or time runs out."""
        deadline = time.monotonic() + timeout
        client_gone = self.request.client_gone
        while True:
            try:
                return self.result.result(timeout=POLL_SECONDS)
            except TimeoutError:
                pass
            except CancelledError:  # only this waiter cancels, and it has raised by then
                raise ClientDisconnected("the request was cancelled") from None
            if client_gone is not None and client_gone():
                self.cancel()
                raise ClientDisconnected("the client disconnected")
            if time.monotonic() > deadline:
                self.cancel()
                raise GenerationTimeout(f"embedding took longer than {timeout:g} seconds and was stopped")


class EmbeddingWork:
    """The embedding jobs a worker holds: between two steps, a group of the first job's inputs, then the next job's."""

    def __init__(self, admission: InFlight, counts: Counter[str]):
        self.admission, self.counts = admission, counts
        self.jobs: deque[EmbeddingJob] = deque()

    def add(self, job: EmbeddingJob) -> None:
        """Take a job from the queue, unless its caller has given up on it already."""
        if job.request.cancelled.is_set() or not job.result.set_running_or_notify_cancel():
            self.counts["cancelled_before_start"] += 1
            self.admission.finished()
            return
        self.jobs.append(job)

    def run_next(self, batch: Batch) -> None:
        """Embed the next group of the first job's inputs beside the batch's rows; then it is the next job's turn.

        A group the rows leave no memory for waits for the next step (one input at a time, if several do not fit).
        """
        job = self.jobs[0]
        if job.request.cancelled.is_set():
            self._end(job, ClientDisconnected("the request was cancelled"))
            return
        group = job.next_group()
        try:
            means = batch.embed(group)
            if means is None and len(group) > 1:
                group = group[:1]
                means = batch.embed(group)
        except Exception:
            log.exception("an embedding failed")
            self._end(job, GenerationFailed("embedding failed; the error has been logged"))
            return
        if means is None:
            if not batch.rows:  # nothing will end to make room: never expected, as the KV cache holds a context
                self._end(job, GenerationFailed("the model's memory cannot hold this input"))
            return
        job.accept(means, group)
        self.jobs.rotate(-1)
        if job.finished:
            self.counts["embeddings"] += 1
            self.counts["embedded_tokens"] += job.embedded_tokens
            self._end(job, Embeddings(job.vectors, job.embedded_tokens))

    def abandon(self) -> None:
        """Fail every job held: the worker is ending."""
        while self.jobs:
            self._end(self.jobs[0], GenerationFailed("the model was unloaded before the embedding ran"))

    def _end(self, job: EmbeddingJob, outcome: Embeddings | PalaverError) -> None:
        self.jobs.remove(job)
        if isinstance(outcome, Embeddings):
            job.result.set_result(outcome)
        else:
            job.result.set_exception(outcome)
        self.admission.finished()
