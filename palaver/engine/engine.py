"""The engine: one worker thread per model that loads it once, then serves a queue of requests.

It bounds nothing: the router in front of it admits each request once, against PALAVER_MAX_PENDING.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from typing import TYPE_CHECKING

from palaver.core.config import Settings
from palaver.core.embeddings import EmbeddingRequest, Embeddings, only_embeds
from palaver.core.errors import ConfigurationError, ModelNotReady, ModelRefused
from palaver.core.requests import GenerationRequest
from palaver.core.tool_calls import read_calls
from palaver.core.types import ModelLimits, ModelSource, PromptInfo, Reply, ReplyEvents, final
from palaver.engine.machine import give_back, resident_bytes
from palaver.engine.scheduling.embedding import EmbeddingJob, embedding_texts
from palaver.engine.scheduling.fair_queue import FairQueue
from palaver.engine.scheduling.generation import Job, Observer, serve
from palaver.engine.scheduling.in_flight import InFlight
from palaver.engine.scheduling.request_inputs import RequestInputs
from palaver.engine.scheduling.turns import StepTurns
from palaver.engine.scheduling.worker import BatchWorker

if TYPE_CHECKING:
    from palaver.engine.prompting.model_family import LoadedModel, ModelFamily

__all__ = ["Engine", "GenerationRequest", "Observer"]

log = logging.getLogger("palaver.engine")

RETRY_AFTER_SECONDS = 5


class Engine:
    """Load a model lazily, exactly once, and run every generation on its worker thread."""

    def __init__(
        self,
        settings: Settings,
        loader: Callable[[Settings], LoadedModel] | None = None,
        observer: Observer | None = None,
        source: ModelSource | None = None,
        name: str | None = None,
        turns: StepTurns | None = None,
        memory_limit: Callable[[], int] | None = None,
    ):
        self.settings = settings
        # Asked when the load starts, not before: what other models hold is known only once a switch has unloaded.
        self._memory_limit = memory_limit
        self.source = source  # where the backends found the model; None: PALAVER_MODEL as a plain path or id
        self.name = name or settings.model_name
        self.turns = turns or StepTurns()  # shared by the models of one server: one step at a time, in turn
        self.observer = observer or Observer()
        self._loader = loader
        self._lock = threading.Lock()
        self._settled = threading.Event()  # set once a load attempt has succeeded or failed
        self._queue = FairQueue()
        self._worker: threading.Thread | None = None
        self.model: LoadedModel | None = None
        self._inputs_lock = threading.Lock()
        self._request_inputs: RequestInputs | None = None
        self.load_error: str | None = None
        self.load_bytes = 0  # how much resident memory the load took: the weights, and on transformers, torch
        self.settled_at = 0.0  # when the last load attempt succeeded or failed
        self.counts: Counter[str] = Counter()  # requests by how they finished, and generated tokens
        self.in_flight = InFlight(self.counts)  # counted, not bounded: the router admits

    @property
    def state(self) -> str:
        if self.model is not None:
            return "ready"
        if self._worker is not None and self._worker.is_alive():
            return "loading"
        return "failed" if self.load_error else "idle"

    def start(self) -> None:
        """Start loading in the background unless a load is running or done."""
        with self._lock:
            if self.model is not None or (self._worker is not None and self._worker.is_alive()):
                return
            self._settled.clear()
            self._worker = threading.Thread(target=self._run, name="palaver-engine", daemon=True)
            self._worker.start()

    def wait_ready(self, timeout: float) -> bool:
        """Start loading if needed and wait up to timeout seconds for it to finish."""
        self.start()
        self._settled.wait(timeout)
        return self.model is not None

    def loaded_model(self, timeout: float) -> LoadedModel:
        """Return the model once loaded, waiting up to timeout seconds; raise 503 saying why it is not."""
        if not self.wait_ready(timeout) or self.model is None:
            raise self._not_ready()
        return self.model

    def model_limits(self, timeout: float) -> ModelLimits:
        """Return the loaded model's family and limits, waiting up to timeout seconds for it to load."""
        model = self.loaded_model(timeout)
        limits = model.family.describe()
        return ModelLimits(
            limits["family"],
            model.loaded_at,
            limits["context_tokens"],
            limits["max_input_tokens"],
            limits["max_reply_tokens"],
        )

    @property
    def model_name(self) -> str:
        return self.name

    @property
    def load_seconds(self) -> float:
        return self.model.load_seconds if self.model is not None else 0.0

    def stream(self, request: GenerationRequest) -> ReplyEvents:
        """Queue a request; yield its PromptInfo, then its text as it is generated, then its Reply."""
        job = Job(request)

        def start() -> PromptInfo:
            self.loaded_model(self.settings.load_wait)
            if self._family().embeds_only:  # known only once loaded where the router could not tell from files
                raise only_embeds(self.name)
            # On the caller's thread: a long history costs its own request time, never the engine's.
            self._inputs().prepare(job)
            assert job.built is not None
            job.reserve_tokens(min(request.params.max_new_tokens, self._family().reply_limit()))
            job.queued_at = time.monotonic()
            self.in_flight.started()  # the worker counts it out, however it ends
            self._queue.put(job)
            return PromptInfo(len(job.built.input_ids), job.built.truncated_turns)

        with closing(serve(job, start, self.settings.request_timeout)) as events:
            yield from read_calls(events) if request.tools is not None and request.tools.calls_possible else events

    def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Queue inputs to embed, in turn with the generations of other clients, and wait for their vectors."""
        self.loaded_model(self.settings.load_wait)
        # On the caller's thread: tokenizing long texts costs the request's own time, never the engine's.
        job = EmbeddingJob(request, embedding_texts(self._family(), request))
        job.reserve_tokens()
        self.in_flight.started()  # the worker counts it out, however it ends
        self._queue.put(job)
        return job.wait(self.settings.request_timeout)

    def tokenize(self, request: GenerationRequest) -> list[int]:
        """Return the token ids the model would be fed for request: the same prompt stream() builds."""
        self.loaded_model(self.settings.load_wait)
        return list(self._inputs().prompt(request).input_ids)

    def detokenize(self, token_ids: list[int]) -> str:
        """Return the text of token ids; ids past the vocabulary are a 400 naming 'tokens'."""
        self.loaded_model(self.settings.load_wait)
        return self._inputs().text_of(token_ids)

    @property
    def pending(self) -> int:
        """Return the requests queued or generating."""
        return self.in_flight.pending

    def generate(self, request: GenerationRequest) -> Reply:
        """Queue a request and wait for its whole reply."""
        return final(self.stream(request), Reply)

    def describe(self) -> dict:
        """Describe the served model and the engine's state."""
        info = {"state": self.state, "pending": self.pending, "requests": dict(self.counts)}
        if self.model is not None:
            info.update(
                name=self.model.name,
                load_seconds=round(self.model.load_seconds, 2),
                weights=self.model.weights,
                engine=self.model.engine,
                **({"kv_cache_bytes": self.model.kv_cache_bytes} if self.model.kv_cache_bytes else {}),
                system_fingerprint=self.model.fingerprint,
                **({"gguf": self.model.gguf} if self.model.gguf else {}),
                **self.model.family.describe(),
            )
        return info

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.close()

    def unload(self, timeout: float = 60) -> None:
        """Stop the worker, once its queue is served, and let go of the model: weights, KV cache, tokenizer."""
        self.close()
        if self._worker is not None:
            self._worker.join(timeout)
        model, self.model, self._request_inputs = self.model, None, None
        if model is not None:
            model.release()

    def kv_bytes(self) -> tuple[int, int]:
        """Return the native KV cache's budget and the bytes of it in use; (0, 0) on the transformers path."""
        return self.model.family.model.kv_bytes() if self.model is not None else (0, 0)

    def _not_ready(self) -> ModelNotReady:
        if self.load_error and self.state == "failed":  # why stays in the server's log: it may name files
            return ModelNotReady("the model failed to load; the server's log says why", retry_after=RETRY_AFTER_SECONDS)
        return ModelNotReady("the model is still loading; retry shortly", retry_after=RETRY_AFTER_SECONDS)

    def _run(self) -> None:
        if self._memory_limit is not None:
            self.settings = replace(self.settings, memory_limit=self._memory_limit())
        before = resident_bytes()
        try:
            self.model = self._loader(self.settings) if self._loader else self._load()
            self.load_error = None
        except (ModelRefused, ConfigurationError) as exc:  # the file's fault, or the settings': its line says why
            log.error("loading %s failed: %s", self.name, exc)
            self.load_error = str(exc)
            give_back()
            return
        except Exception as exc:  # a bad model must not take the server down
            log.exception("loading the model failed")
            self.load_error = str(exc) or exc.__class__.__name__
            give_back()  # whatever the failed load took goes back before anything else loads
            return
        finally:
            self.load_bytes = max(0, resident_bytes() - before)
            self.settled_at = time.monotonic()
            self._settled.set()
        worker = BatchWorker(
            self.model.family, self.settings, self._queue, self.turns, self.observer, self.in_flight, self._inputs
        )
        worker.run()

    def _load(self) -> LoadedModel:
        # The loaders are imported here, on the worker, so the web server starts and answers at once; a model that
        # the native step serves never imports torch or transformers.
        from palaver.engine.model_sources import plain_source
        from palaver.engine.native.loading import load_native, why_not_native

        where = self.source or plain_source(self.settings.model)
        native = load_native(self.settings, self.name, where.weights)
        if native is not None:
            return native
        from palaver.engine.torch.loading import load_model

        return load_model(self.settings, where, self.name, why_not_native(self.settings, where.weights)[0])

    def _family(self) -> ModelFamily:
        """Return the loaded model's family; the worker serves only once the model is loaded."""
        assert self.model is not None
        return self.model.family

    def _inputs(self) -> RequestInputs:
        """Return what turns requests into the loaded model's inputs, made once the model is loaded."""
        with self._inputs_lock:
            if self._request_inputs is None:
                self._request_inputs = RequestInputs(self._family())
            return self._request_inputs
