"""Where replies are generated: the engine in this process, or an OpenAI-compatible upstream, behind one protocol."""

from __future__ import annotations

from palaver.backends.protocol import Backend
from palaver.backends.sources import model_source
from palaver.backends.upstream import UpstreamEngine
from palaver.core.config import Settings
from palaver.engine.engine import Engine
from palaver.engine.generation import Observer

__all__ = ["Backend", "create_backend"]


def create_backend(settings: Settings, observer: Observer | None = None) -> Backend:
    """Return the backend PALAVER_BACKEND names, for settings already resolved (backends.sources)."""
    if settings.backend == "openai":
        return UpstreamEngine(settings, observer)
    return Engine(settings, source=model_source(settings), observer=observer)
