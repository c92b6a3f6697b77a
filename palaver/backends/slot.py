"""One configured model as the router holds it: its settings, its backend while loaded, who uses it, what it costs."""

from __future__ import annotations

from dataclasses import dataclass

from palaver.backends.model_list import ModelEntry
from palaver.backends.protocol import Backend
from palaver.backends.sources import model_source
from palaver.core.config import Settings
from palaver.core.types import ModelLimits
from palaver.engine.engine import Engine
from palaver.engine.memory import weight_bytes
from palaver.engine.sources import resolve_source

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

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def state(self) -> str:
        return "unloaded" if self.backend is None else STATES.get(self.backend.state, self.backend.state)

    def idle(self) -> bool:
        """Tell whether the model is loaded and nobody uses it: it may be unloaded."""
        return self.backend is not None and self.users == 0 and self.backend.pending == 0 and self.state != "loading"

    def charge(self) -> int:
        """Return the bytes it holds or has reserved: weights, and a native KV cache's budget."""
        kv_budget = self.backend.kv_bytes()[0] if isinstance(self.backend, Engine) else 0
        return weight_bytes(self.weights_path()) + kv_budget

    def weights_path(self) -> str:
        """Return where its weights are, or "" where that is not known before loading."""
        try:
            where = model_source(self.settings)
            return where.weights if where else resolve_source(self.settings.model)
        except Exception:  # a missing file is the load's to report
            return ""
