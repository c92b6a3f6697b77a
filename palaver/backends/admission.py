"""Admission control: one bound on the requests that wait for or use the models at once, whichever model."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from palaver.core.errors import ServerBusy

BUSY_RETRY_AFTER_SECONDS = 2


class Admission:
    """Bound the requests queued or generating, with those waiting for their conversation's turn: the one gate."""

    def __init__(self, limit: int, counts: Counter[str]):
        self.limit = limit
        self.counts = counts
        self.pending = 0  # requests queued or generating
        self.waiting = 0  # requests waiting for their conversation's previous turn to end
        self._lock = threading.Lock()

    def admit(self, places: int = 1) -> None:
        """Take places for a request that queues (one per input it embeds), all or none, or refuse with 429."""
        self._take("pending", places)

    def finished(self, places: int = 1) -> None:
        """Give back a queued request's places."""
        self._give_back("pending", places)

    @contextmanager
    def waiting_turn(self) -> Iterator[None]:
        """Hold a place while a request waits for its conversation's turn."""
        self._take("waiting")
        try:
            yield
        finally:
            self._give_back("waiting")

    def _take(self, counter: str, places: int = 1) -> None:
        with self._lock:
            if self.pending + self.waiting + places > self.limit:
                self.counts["refused_busy"] += 1
                raise ServerBusy(
                    "the server is busy; try again in a few seconds",
                    retry_after=BUSY_RETRY_AFTER_SECONDS,
                    code="server_busy",
                )
            setattr(self, counter, getattr(self, counter) + places)

    def _give_back(self, counter: str, places: int = 1) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) - places)
