"""The engine: one worker thread per model that loads it once, then serves a queue of requests."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from commons import GenerationParams, Message, Reply, Settings
from errors import GenerationFailed, GenerationTimeout, ModelNotReady, PalaverError

if TYPE_CHECKING:
    from loading import LoadedModel

log = logging.getLogger("palaver.engine")

RETRY_AFTER_SECONDS = 5


@dataclass
class GenerationRequest:
    """One unit of work for the worker: its inputs, a way to hand back the reply, and a cancel flag."""

    messages: list[Message]
    params: GenerationParams
    result: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the worker to skip or stop this request."""
        self.cancelled.set()
        self.result.cancel()


class Engine:
    """Load a model lazily, exactly once, and run every generation on its worker thread."""

    def __init__(self, settings: Settings, loader: Callable[[Settings], "LoadedModel"] | None = None):
        self.settings = settings
        self._loader = loader
        self._lock = threading.Lock()
        self._settled = threading.Event()  # set once a load attempt has succeeded or failed
        self._queue: queue.Queue[GenerationRequest | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self.model: "LoadedModel | None" = None
        self.load_error: str | None = None

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

    def generate(self, messages: list[Message], params: GenerationParams) -> Reply:
        """Queue one generation and wait for its reply."""
        if not self.wait_ready(self.settings.load_wait):
            raise self._not_ready()
        request = GenerationRequest(list(messages), params)
        self._queue.put(request)
        try:
            return request.result.result(timeout=self.settings.request_timeout)
        except FutureTimeout:
            request.cancel()
            raise GenerationTimeout(
                f"generation took longer than {self.settings.request_timeout:g} seconds and was stopped") from None

    def describe(self) -> dict:
        """Describe the served model and the engine's state."""
        info = {"state": self.state}
        if self.model is not None:
            info.update(name=self.model.name, load_seconds=round(self.model.load_seconds, 2),
                        **self.model.family.describe())
        elif self.load_error:
            info["error"] = self.load_error
        return info

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.put(None)

    def _not_ready(self) -> ModelNotReady:
        if self.load_error and self.state == "failed":
            return ModelNotReady(f"the model failed to load: {self.load_error}", retry_after=RETRY_AFTER_SECONDS)
        return ModelNotReady("the model is still loading; retry shortly", retry_after=RETRY_AFTER_SECONDS)

    def _run(self) -> None:
        try:
            # torch is imported here, on the worker, so the web server starts and answers at once.
            from loading import load_model

            self.model = (self._loader or load_model)(self.settings)
            self.load_error = None
        except Exception as exc:  # a bad model must not take the server down
            log.exception("loading the model failed")
            self.load_error = str(exc) or exc.__class__.__name__
            return
        finally:
            self._settled.set()
        self._serve()

    def _serve(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            if request.cancelled.is_set() or not request.result.set_running_or_notify_cancel():
                continue
            try:
                reply = self.model.family.generate(request.messages, request.params, request.cancelled)
            except PalaverError as exc:
                request.result.set_exception(exc)
            except Exception:
                log.exception("generation failed")
                request.result.set_exception(GenerationFailed("generation failed; the error has been logged"))
            else:
                request.result.set_result(reply)
