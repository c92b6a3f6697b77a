"""Helpers for tests that force failures or hold the engine busy."""

from __future__ import annotations

import threading
from contextlib import contextmanager


def raising(error: Exception):
    """Return a stand-in for a model call that fails with error, to force failures."""

    def fail(*args, **kwargs):
        raise error

    return fail


@contextmanager
def model_held(model):
    """Hold the model's forward pass until released, to keep the engine busy; yield (busy, release)."""
    busy, release = threading.Event(), threading.Event()
    real_forward = model.forward

    def held_forward(*args, **kwargs):
        busy.set()
        release.wait(30)
        return real_forward(*args, **kwargs)

    model.forward = held_forward
    try:
        yield busy, release
    finally:
        release.set()
        del model.forward  # back to the class's own forward
