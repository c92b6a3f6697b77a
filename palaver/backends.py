"""The backends a server generates with: the engine in this process, or an OpenAI-compatible upstream."""

from __future__ import annotations

from palaver.config import Settings
from palaver.engine.engine import Engine
from palaver.engine.requests import Observer
from palaver.upstream import UpstreamEngine

Backend = Engine | UpstreamEngine


def create_backend(settings: Settings, observer: Observer | None = None) -> Backend:
    """Return the backend PALAVER_BACKEND names."""
    if settings.backend == "openai":
        return UpstreamEngine(settings, observer)
    return Engine(settings, observer=observer)
