"""Many models behind one backend: each loaded on first use, unloaded when idle or when another needs the room."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from palaver.backends.admission import Admission
from palaver.backends.budget import MemoryBudget, RoomInUse
from palaver.backends.model_list import ModelEntry, configured_models
from palaver.backends.protocol import Backend
from palaver.backends.slot import Slot
from palaver.backends.sources import model_source, resolve_settings
from palaver.backends.switches import SwitchBudget
from palaver.backends.upstream import UpstreamEngine
from palaver.core.config import Settings
from palaver.core.embeddings import EmbeddingRequest, Embeddings, only_embeds
from palaver.core.errors import ModelNotReady, NotFound
from palaver.core.requests import GenerationRequest
from palaver.core.types import CALLER, ModelLimits, Reply, ReplyEvents, final
from palaver.engine.engine import RETRY_AFTER_SECONDS, Engine
from palaver.engine.machine import give_back, resident_bytes
from palaver.engine.scheduling.generation import Observer
from palaver.engine.scheduling.turns import StepTurns

if TYPE_CHECKING:
    from palaver.engine.prompting.model_family import LoadedModel

log = logging.getLogger("palaver.models")


class ModelRouter:
    """Serve the configured models through one backend interface; requests name theirs, or get the default."""

    def __init__(
        self,
        settings: Settings,
        observer_for: Callable[[str], Observer] | None = None,
        loader: Callable[[Settings], LoadedModel] | None = None,
    ):
        self.settings = settings
        self.entries = configured_models(settings)
        self.slots = {entry.name: Slot(entry, self._resolve(entry)) for entry in self.entries}
        self.default = self.entries[0].name
        self.observer_for = observer_for or (lambda name: Observer())
        self.loader = loader
        self.turns = StepTurns()  # one step at a time across the models, in turn
        self.budget = MemoryBudget(settings.memory_limit)
        self.switches = SwitchBudget(settings.client_switches)
        # PALAVER_MAX_PENDING bounds the server, not each model: N models must not let N times as many in. This is
        # the one gate: the backends behind it admit nothing again.
        self.counts: Counter[str] = Counter()
        self.admission = Admission(settings.max_pending, self.counts)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a model's users or backend changed: waiting leases look again
        self._draining: Counter[str] = Counter()  # models whose room a waiting load needs: no new requests for them
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

    def _configured(self, name: str | None) -> str:
        """Return name if it is a configured one (resolved where its request came in); resolve any other name."""
        if name is None:
            return self.default
        return name if name in self.slots else self.resolve(name)

    # Leases: a model in use is never unloaded; one that must load first makes room for itself.

    @contextmanager
    def using(self, name: str | None, client: str | None = None) -> Iterator[Backend]:
        """Hold a model for the body's length, creating its backend (which loads on first use) if needed.

        client: whom a switch is charged to; by default the caller of the thread that takes the lease.
        """
        slot, victims = self._lease(self._configured(name), CALLER.get().client if client is None else client)
        try:
            try:
                for victim, victim_backend in victims:
                    log.info("unloading %s to make room for %s", victim, slot.name)
                    self._release(victim, victim_backend)
            finally:
                if slot.starting:  # what it unloaded is gone: its load sizes its cache by what is left
                    assert slot.backend is not None
                    slot.backend.start()
                    with self._changed:
                        slot.starting = False
                        self._changed.notify_all()  # requests for it waited for this start, not their own
            assert slot.backend is not None
            yield slot.backend
        finally:
            backend = slot.backend  # however the body ended (a stream is closed before its end): ready is known
            if backend is not None and backend.state == "ready":
                slot.failures = 0
                if slot.limits is None:
                    slot.limits = backend.model_limits(0)
            with self._changed:
                slot.users -= 1
                slot.last_used = time.monotonic()
                self._changed.notify_all()  # a request waiting for this model's room may take it now

    def _lease(self, name: str, client: str) -> tuple[Slot, list[tuple[str, Backend]]]:
        """Take a place on a model; one to load first waits (up to PALAVER_LOAD_WAIT) for other loads and for room.

        While it waits for room that models in use hold, they take no new requests, so a stream of them cannot
        hold the room for ever; that wait is a switch, charged to the client at once. Return the models unloaded.
        """
        deadline = time.monotonic() + self.settings.load_wait
        draining: list[Slot] = []  # the models this request waits for, which take no new requests meanwhile
        why: ModelNotReady | None = None
        with self._changed:
            try:
                while True:
                    slot = self.slots[name]
                    self._retire_if_failed(slot)
                    # Not while its lessee unloads what it replaces: a load started by this request would size its
                    # KV cache by memory the replaced model still holds, and fail.
                    if slot.backend is not None and not slot.starting and not self._draining[name]:
                        slot.users += 1
                        slot.last_used = time.monotonic()
                        return slot, []
                    loading = next((other for other in self.slots.values() if other.loading()), None)
                    if slot.backend is None and loading is None:  # one load at a time: each sees what others took
                        try:
                            return slot, self._load_into(slot, client, charged=bool(draining))
                        except RoomInUse as held:
                            why = held
                            if held.busy and not draining:  # holding others' requests back costs a switch
                                self._charge_switch(slot, held.busy, client)
                            for busy in held.busy:
                                if busy not in draining:
                                    draining.append(busy)
                                    self._draining[busy.name] += 1
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise why or ModelNotReady(
                            f"the model '{name}' waits for another model to load or make room; retry shortly",
                            retry_after=RETRY_AFTER_SECONDS,
                        )
                    self._changed.wait(min(left, 0.25))  # a load settling is seen within a quarter second
            finally:
                for busy in draining:
                    self._draining[busy.name] -= 1
                if draining:
                    self._changed.notify_all()

    def _retire_if_failed(self, slot: Slot) -> None:
        """Let a failed model's backend go once its back-off is over, so it loads afresh; 503 while it lasts."""
        if slot.backend is None or slot.backend.state != "failed" or not isinstance(slot.backend, Engine):
            return
        wait = slot.retry_in()
        if wait > 0:
            raise ModelNotReady(
                f"the model '{slot.name}' failed to load (the server's log says why); it is tried again in "
                f"{math.ceil(wait)} s",
                retry_after=max(1, math.ceil(wait)),
            )
        failed, slot.backend, slot.failures = slot.backend, None, slot.failures + 1
        failed.unload()  # its worker has ended and its memory went back when it failed: nothing waits here

    def _charge_switch(self, slot: Slot, displaced: list[Slot], client: str) -> None:
        """Count a switch to slot against the request's client (429 past its budget); the default's are free."""
        if slot.name != self.default:  # the default must stay servable for everyone
            self.switches.charge(client, slot.name, [other.name for other in displaced])

    def _load_into(self, slot: Slot, client: str, charged: bool) -> list[tuple[str, Backend]]:
        """Make room for slot (refusing before anything goes), give it a backend, and return what it unloads."""
        loaded = [other for other in self.slots.values() if other.backend is not None and other is not slot]
        victims = self.budget.plan_room(slot, loaded)
        if victims and not charged:
            self._charge_switch(slot, victims, client)
        retired = []
        for victim in victims:  # taken out now: a request for it from here on loads it afresh
            assert victim.backend is not None
            retired.append((victim.name, victim.backend))
            victim.backend, victim.unloads = None, victim.unloads + 1
        slot.backend = self._new_backend(slot)
        slot.starting = isinstance(slot.backend, Engine)  # other loads wait until this one has settled
        slot.loads += 1
        slot.users += 1
        slot.last_used = time.monotonic()
        return retired

    def _new_backend(self, slot: Slot) -> Backend:
        observer = self.observer_for(slot.name)
        if slot.settings.backend == "openai":
            return UpstreamEngine(slot.settings, observer)
        settings = slot.settings
        others = [other for other in self.slots.values() if other.backend is not None and other is not slot]
        budgeted = self.budget.limit and len(self.slots) > 1  # the KV cache may have what the others have not
        return Engine(
            settings,
            loader=self.loader,
            observer=observer,
            source=model_source(settings),
            name=slot.name,
            turns=self.turns,
            memory_limit=(lambda: self.budget.limit_for(others)) if budgeted else None,
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
            if backend.state == "ready":  # what it really took: the next load of it is planned with that
                self.slots[name].footprint = max(self.slots[name].footprint, backend.load_bytes)
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
        """Admit a request, the one time, and queue it on its model; yield its PromptInfo, its text, then its Reply."""
        name = self._configured(request.model)  # an unknown one is a 404 that takes no place
        if self.slots[name].embeds_only:  # so is a generation asked of a model that only embeds, a 400
            raise only_embeds(name)
        request.caller = request.caller.using(name)  # a model the caller's quotas refuse is a 403 that takes no place
        self.admission.admit()  # one bound for the server, whichever model a request names
        try:
            with self.using(name, request.caller.client) as backend:  # whoever reads the stream
                yield from backend.stream(request)
        finally:
            self.admission.finished()

    def generate(self, request: GenerationRequest) -> Reply:
        return final(self.stream(request), Reply)

    def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Admit an embedding, one place per input, and run it on its model (loaded first, as for a generation)."""
        name = self._configured(request.model)
        request.caller = request.caller.using(name)
        places = len(request.inputs)
        self.admission.admit(places)
        try:
            with self.using(name, request.caller.client) as backend:
                return backend.embed(request)
        finally:
            self.admission.finished(places)

    def tokenize(self, request: GenerationRequest) -> list[int]:
        with self.using(request.model, request.caller.client) as backend:
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
        if self.slots[self.default].settings.backend != "openai":
            return self.default  # a name is no reason to load a model
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

    def describe(self) -> dict[str, Any]:
        """Describe the default model (as one model's server does) and list every model with its state."""
        slot = self.slots[self.default]
        info = slot.backend.describe() if slot.backend is not None else {"state": "idle", "pending": 0}
        info["state"] = self.state
        info["waiting"] = self.waiting_count  # requests waiting for their conversation's turn, on any model
        info["requests"] = {**info.get("requests", {}), **self.counts}  # the server's refusals beside the model's
        info["models"] = [self.describe_model(name) for name in self.names]
        info["memory"] = {"resident_bytes": resident_bytes(), "limit_bytes": self.budget.limit or None}
        return info

    def describe_model(self, name: str) -> dict[str, Any]:
        """Describe one model without loading it: state, use, and its limits once known."""
        slot = self.slots[name]
        if slot.limits is None and slot.backend is not None and slot.backend.state == "ready":
            slot.limits = slot.backend.model_limits(0)  # ready: known at once, and kept for after an unload
        shown = name if slot.limits is None else self.public_name(name)  # an upstream's, once it has answered
        info: dict[str, Any] = {
            "name": shown,
            "state": slot.state,
            "pending": slot.backend.pending if slot.backend else 0,
        }
        if slot.limits is not None:
            info["limits"] = asdict(slot.limits)
        if slot.state == "failed":
            info["retry_in_seconds"] = math.ceil(slot.retry_in() * 10) / 10  # 0 only once it may be tried
        info.update(loads=slot.loads, unloads=slot.unloads, default=name == self.default, embeds_only=slot.embeds_only)
        return info

    def close(self) -> None:
        self._closed.set()
        for slot in self.slots.values():
            if slot.backend is not None:
                slot.backend.close()


def upstream_name(backend: UpstreamEngine, otherwise: str) -> str:
    """Return the name an upstream serves its model under, without asking it (otherwise until it has answered)."""
    return backend.settings.upstream_model or backend.served_id or otherwise
