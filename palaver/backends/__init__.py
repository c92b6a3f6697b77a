"""Where replies are generated: the engine in this process, or an OpenAI-compatible upstream, behind one protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from palaver.backends.protocol import Backend
from palaver.backends.router import ModelRouter
from palaver.core.config import Settings
from palaver.engine.scheduling.generation import Observer

if TYPE_CHECKING:
    from palaver.engine.prompting.model_family import LoadedModel

__all__ = ["Backend", "ModelRouter", "create_backend"]


def create_backend(
    settings: Settings,
    observer_for: Callable[[str], Observer] | None = None,
    loader: Callable[[Settings], LoadedModel] | None = None,
) -> ModelRouter:
    """Return the configured models behind one backend, for settings already resolved (backends.sources).

    Each model is the engine in this process, or the upstream PALAVER_BACKEND=openai names.
    """
    return ModelRouter(settings, observer_for, loader)
