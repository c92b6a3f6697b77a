"""Many models behind one backend: each loaded on first use, unloaded when idle or when another needs the room."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, replace

from palaver.backends.budget import MemoryBudget
from palaver.backends.model_list import ModelEntry, configured_models
from palaver.backends.protocol import Backend
from palaver.backends.slot import Slot
from palaver.backends.sources import model_source, resolve_settings
from palaver.backends.upstream import UpstreamEngine
from palaver.core.config import Settings
from palaver.core.errors import NotFound
from palaver.core.types import ModelLimits, Reply, ReplyEvents, final
from palaver.engine.admission import Admission
from palaver.engine.engine import Engine
from palaver.engine.generation import GenerationRequest, Observer
from palaver.engine.memory import give_back, resident_bytes
from palaver.engine.turns import StepTurns

log = logging.getLogger("palaver.models")


class ModelRouter:
    """Serve the configured models through one backend interface; requests name theirs, or get the default."""

    def __init__(
        self,
        settings: Settings,
        observer_for: Callable[[str], Observer] | None = None,
        loader: Callable[[Settings], object] | None = None,
    ):
        self.settings = settings
        self.entries = configured_models(settings)
        self.slots = {entry.name: Slot(entry, self._resolve(entry)) for entry in self.entries}
        self.default = self.entries[0].name
        self.observer_for = observer_for or (lambda name: Observer())
        self.loader = loader
        self.turns = StepTurns()  # one step at a time across the models, in turn
        self.budget = MemoryBudget(settings.memory_limit)
        # PALAVER_MAX_PENDING bounds the server, not each model: N models must not let N times as many in.
        self.counts: Counter = Counter()
        self.admission = Admission(settings.max_pending, self.counts)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if settings.keep_alive > 0:
            threading.Thread(target=self._reap_idle, name="palaver-keep-alive", daemon=True).start()

    def _resolve(self, entry: ModelEntry) -> Settings:
        if len(self.settings.models.strip()) == 0:
            return self.settings  # PALAVER_MODEL alone: resolved where the settings were read
        return resolve_settings(entry.settings(self.settings))

    # Which model: names as configured, or a source as written (PALAVER_MODEL's path or id).

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def resolve(self, name: str | None) -> str:
        """Return the configured name a request's model means; None or empty is the default."""
        if not name:
            return self.default
        if name in self.slots:
            return name
        for entry in self.entries:
            if name == entry.source and name:
                return entry.name
        for slot in self.slots.values():  # through an upstream, the name it serves the model under, once known
            if isinstance(slot.backend, UpstreamEngine) and name == upstream_name(slot.backend, ""):
                return slot.name
        known = ", ".join(f"'{known}'" for known in self.names)
        shown = name if len(name) <= 100 else name[:100] + "…"  # a name is echoed, never a whole body
        raise NotFound(
            f"the model '{shown}' does not exist; this server serves {known}", param="model", code="model_not_found"
        )

    # Leases: a model in use is never unloaded; one that must load first makes room for itself.

    @contextmanager
    def using(self, name: str | None) -> Iterator[Backend]:
        """Hold a model for the body's length, creating its backend (which loads on first use) if needed."""
        slot, victims = self._lease(self.resolve(name))
        try:
            for victim, victim_backend in victims:
                log.info("unloading %s to make room for %s", victim, slot.name)
                self._release(victim, victim_backend)
            assert slot.backend is not None
            yield slot.backend
        finally:
            backend = slot.backend  # however the body ended (a stream is closed before its end): ready is known
            if slot.limits is None and backend is not None and backend.state == "ready":
                slot.limits = backend.model_limits(0)
            with self._lock:
                slot.users -= 1
                slot.last_used = time.monotonic()

    def _lease(self, name: str) -> tuple[Slot, list[tuple[str, Backend]]]:
        with self._lock:
            slot = self.slots[name]
            victims: list[tuple[str, Backend]] = []
            if slot.backend is None:
                loaded = [other for other in self.slots.values() if other.backend is not None and other is not slot]
                victims = self.budget.make_room(slot, loaded)
                slot.backend = self._new_backend(slot)
                slot.loads += 1
            slot.users += 1
            slot.last_used = time.monotonic()
            return slot, victims

    def _new_backend(self, slot: Slot) -> Backend:
        observer = self.observer_for(slot.name)
        if slot.settings.backend == "openai":
            return UpstreamEngine(slot.settings, observer)
        settings = slot.settings
        if self.budget.limit and len(self.slots) > 1:  # the KV cache may have what the others have not committed
            others = [other for other in self.slots.values() if other.backend is not None and other is not slot]
            settings = replace(settings, memory_limit=self.budget.limit_for(others))
        loader = self.loader
        return Engine(
            settings,
            loader=(lambda _: loader(settings)) if loader else None,  # type: ignore[arg-type, return-value]
            observer=observer,
            source=model_source(settings),
            name=slot.name,
            turns=self.turns,
        )

    def unload(self, name: str) -> bool:
        """Unload a model now if nobody uses it; return whether it was unloaded."""
        with self._lock:
            slot = self.slots[self.resolve(name)]
            if not slot.idle():
                return False
            backend, slot.backend, slot.unloads = slot.backend, None, slot.unloads + 1
        self._release(slot.name, backend)
        return True

    def _release(self, name: str, backend: Backend | None) -> None:
        before = resident_bytes()
        if isinstance(backend, Engine):
            backend.unload()
        elif backend is not None:
            backend.close()
        give_back()
        log.info("unloaded %s: resident memory %.0f MB -> %.0f MB", name, before / 1e6, resident_bytes() / 1e6)

    def _reap_idle(self) -> None:
        keep = self.settings.keep_alive
        while not self._closed.wait(min(max(keep / 4, 0.05), 5.0)):
            now = time.monotonic()
            for slot in list(self.slots.values()):
                if slot.backend is not None and slot.idle() and now - slot.last_used >= keep:
                    log.info("%s has been idle for %.0f s (PALAVER_KEEP_ALIVE)", slot.name, now - slot.last_used)
                    self.unload(slot.name)

    def public_name(self, name: str) -> str:
        """Return the name replies carry: as configured, or through an upstream, the name it serves the model under."""
        backend = self.slots[name].backend
        return upstream_name(backend, name) if isinstance(backend, UpstreamEngine) else name

    def loaded(self, name: str | None = None) -> Backend | None:
        """Return a model's backend while it is loaded or loading (the default's if name is None), else None."""
        return self.slots[self.resolve(name)].backend

    # The backend protocol, routed by the request's model.

    def stream(self, request: GenerationRequest) -> ReplyEvents:
        """Queue a request on its model; yield its PromptInfo, its text, then its Reply."""
        request.model = self.resolve(request.model)
        self.admission.admit()  # one bound for the server, whichever model a request names
        try:
            with self.using(request.model) as backend:
                yield from backend.stream(request)
        finally:
            self.admission.finished()

    def generate(self, request: GenerationRequest) -> Reply:
        return final(self.stream(request), Reply)

    def tokenize(self, request: GenerationRequest) -> list[int]:
        with self.using(request.model) as backend:
            return backend.tokenize(request)

    def detokenize(self, token_ids: list[int], model: str | None = None) -> str:
        with self.using(model) as backend:
            return backend.detokenize(token_ids)

    def model_limits(self, timeout: float, model: str | None = None) -> ModelLimits:
        with self.using(model) as backend:
            return backend.model_limits(timeout)

    def waiting(self) -> AbstractContextManager[None]:
        """Count a request waiting for its conversation's turn toward the server's pending bound."""
        return self.admission.waiting_turn()

    def start(self, model: str | None = None) -> None:
        """Start loading a model (the default if None) in the background."""
        with self.using(model) as backend:
            backend.start()

    def wait_ready(self, timeout: float, model: str | None = None) -> bool:
        with self.using(model) as backend:
            return backend.wait_ready(timeout)

    @property
    def model_name(self) -> str:
        with self.using(None):  # through an upstream, looked up (as a request would) on first use
            return self.public_name(self.default)

    @property
    def state(self) -> str:
        """Return the default model's state; one unloaded after serving counts as ready (it loads on demand)."""
        slot = self.slots[self.default]
        if slot.backend is None:
            return "ready" if slot.limits is not None else "idle"
        return slot.backend.state

    @property
    def pending(self) -> int:
        """Return the requests queued or generating, on every model."""
        return self.admission.pending

    @property
    def waiting_count(self) -> int:
        """Return the requests waiting for their conversation's previous turn to end."""
        return self.admission.waiting

    @property
    def load_seconds(self) -> float:
        slot = self.slots[self.default]
        return slot.backend.load_seconds if slot.backend is not None else 0.0

    def fingerprint(self, name: str) -> str | None:
        """Return a loaded model's system_fingerprint; None through an upstream, or when it is not loaded."""
        backend = self.slots[name].backend
        return backend.describe().get("system_fingerprint") if backend is not None else None

    def load_seconds_of(self, name: str) -> float:
        backend = self.slots[name].backend
        return backend.load_seconds if backend is not None else 0.0

    def describe(self) -> dict:
        """Describe the default model (as one model's server does) and list every model with its state."""
        slot = self.slots[self.default]
        info = slot.backend.describe() if slot.backend is not None else {"state": "idle", "pending": 0}
        info["state"] = self.state
        info["waiting"] = self.waiting_count  # requests waiting for their conversation's turn, on any model
        info["requests"] = {**info.get("requests", {}), **self.counts}  # the server's refusals beside the model's
        info["models"] = [self.describe_model(name) for name in self.names]
        info["memory"] = {"resident_bytes": resident_bytes(), "limit_bytes": self.budget.limit or None}
        return info

    def describe_model(self, name: str) -> dict:
        """Describe one model without loading it: state, use, and its limits once known."""
        slot = self.slots[name]
        if slot.limits is None and slot.backend is not None and slot.backend.state == "ready":
            slot.limits = slot.backend.model_limits(0)  # ready: known at once, and kept for after an unload
        shown = name if slot.limits is None else self.public_name(name)  # an upstream's, once it has answered
        info: dict = {"name": shown, "state": slot.state, "pending": slot.backend.pending if slot.backend else 0}
        if slot.limits is not None:
            info["limits"] = asdict(slot.limits)
        info.update(loads=slot.loads, unloads=slot.unloads, default=name == self.default)
        return info

    def close(self) -> None:
        self._closed.set()
        for slot in self.slots.values():
            if slot.backend is not None:
                slot.backend.close()


def upstream_name(backend: UpstreamEngine, otherwise: str) -> str:
    """Return the name an upstream serves its model under, without asking it (otherwise until it has answered)."""
    return backend.settings.upstream_model or backend.served_id or otherwise
