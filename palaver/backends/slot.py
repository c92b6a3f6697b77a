"""One configured model as the router holds it: its settings, its backend while loaded, who uses it, what it costs."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from palaver.backends.model_list import ModelEntry
from palaver.backends.protocol import Backend
from palaver.backends.sources import model_source
from palaver.core.config import Settings
from palaver.core.types import ModelLimits
from palaver.engine.engine import Engine
from palaver.engine.machine import weight_bytes
from palaver.engine.model_sources import resolve_source
from palaver.engine.prompting.encoders import SentenceEncoderFamily, embeds_only

RETRY_BASE_SECONDS = 1.0  # a failed load is tried again after 1 s, then 2, 4… up to a minute
RETRY_CAP_SECONDS = 60.0
STATES = {"idle": "unloaded", "loading": "loading", "ready": "ready", "failed": "failed"}


@dataclass
class Slot:
    """One configured model: its settings, its backend while loaded, and who is using it."""

    entry: ModelEntry
    settings: Settings
    backend: Backend | None = None
    users: int = 0  # requests between lease and release: never unloaded under them
    last_used: float = 0.0
    limits: ModelLimits | None = None  # known once it has loaded
    loads: int = 0
    unloads: int = 0
    failures: int = 0  # loads failed in a row: each doubles the wait before the next try
    starting: bool = False  # given a backend whose load its lessee is about to start
    footprint: int = 0  # the resident memory its last load took, once measured: a better guess than its files

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def state(self) -> str:
        return "unloaded" if self.backend is None else STATES.get(self.backend.state, self.backend.state)

    @property
    def embeds_only(self) -> bool:
        """Tell whether the model only embeds (a sentence encoder): as its family says once loaded, else its files."""
        if self.limits is not None:
            return self.limits.family == SentenceEncoderFamily.name
        return self.files_embed_only

    @functools.cached_property
    def files_embed_only(self) -> bool:
        """Tell whether the model's files are a sentence encoder's, read once (a hub id's tell only once it loads)."""
        return self.settings.backend != "openai" and embeds_only(self.weights_path())

    def loading(self) -> bool:
        """Tell whether its model is being loaded here (made and not yet settled): it takes memory as it goes."""
        return isinstance(self.backend, Engine) and (self.starting or self.backend.state == "loading")

    def retry_in(self) -> float:
        """Return the seconds before a failed model may be loaded again; 0 when it may (or has not failed)."""
        if self.backend is None or self.backend.state != "failed" or not isinstance(self.backend, Engine):
            return 0.0
        wait = min(
            RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2.0 ** min(self.failures, 16)
        )  # days of failures: no overflow
        return max(0.0, self.backend.settled_at + wait - time.monotonic())

    def need(self) -> int:
        """Return the bytes its weights will take once loaded: as measured last time, or as its files say."""
        return max(self.file_need(), self.footprint)

    def file_need(self) -> int:
        """Return the bytes its weights will take once loaded, as its files say."""
        return weight_bytes(self.weights_path())

    def idle(self) -> bool:
        """Tell whether the model is loaded and nobody uses it: it may be unloaded."""
        return self.backend is not None and self.users == 0 and self.backend.pending == 0 and self.state != "loading"

    def charge(self) -> int:
        """Return the bytes it holds or has reserved: weights, and a native KV cache's budget."""
        if not isinstance(self.backend, Engine):
            return weight_bytes(self.weights_path())
        return max(self.need(), self.backend.load_bytes) + self.backend.kv_bytes()[0]

    def weights_path(self) -> str:
        """Return where its weights are, or "" where that is not known before loading."""
        try:
            where = model_source(self.settings)
            return where.weights if where else resolve_source(self.settings.model)
        except Exception:  # a missing file is the load's to report
            return ""
