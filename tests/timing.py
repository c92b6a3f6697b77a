"""Time in tests: budgets scaled for a slow or busy machine, and waiting for an event instead of sleeping."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def time_scale() -> float:
    """Return PALAVER_TEST_TIME_SCALE (1 unless set): how much slower than usual this machine may be."""
    scale = float(os.environ.get("PALAVER_TEST_TIME_SCALE", "1"))
    if scale <= 0:
        raise ValueError(f"PALAVER_TEST_TIME_SCALE must be above 0, not {scale}")
    return scale


def budget(seconds: float) -> float:
    """Return how long something that takes at most seconds here may take on this machine."""
    return seconds * time_scale()


def wait_until(condition: Callable[[], T], timeout: float = 60, what: str = "the condition", every: float = 0.05) -> T:
    """Poll condition until it holds (an event), failing after budget(timeout) seconds; return its value."""
    limit = budget(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {limit:g}s")
        time.sleep(every)
