"""The engine's public face: `Engine` loads a model once and serves `GenerationRequest`s (palaver.engine)."""

from palaver.core.requests import GenerationRequest
from palaver.engine.engine import Engine
from palaver.engine.scheduling.generation import Observer

__all__ = ["Engine", "GenerationRequest", "Observer"]
