"""A backend's count of the requests it holds, queued or generating: work it has, not a bound."""

from __future__ import annotations

import threading
from collections import Counter


class InFlight:
    """Count one backend's requests queued or generating: work it has, not a bound (the router admits)."""

    def __init__(self, counts: Counter[str]):
        self.counts = counts  # requests by how they finished, kept beside the count
        self.pending = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        """Count a request that was queued."""
        with self._lock:
            self.pending += 1

    def finished(self) -> None:
        """Count a queued request out, however it ended."""
        with self._lock:
            self.pending -= 1
