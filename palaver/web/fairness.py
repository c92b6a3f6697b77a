"""Per-client fairness: the share of the server's rows (requests, choices, prompts) each client may hold."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from palaver.core.errors import RateLimited

SHARE_RETRY_AFTER_SECONDS = 2


class ClientShares:
    """Count each client's rows in flight, and refuse one past the client's share with 429."""

    def __init__(self, share: int):
        self.share = share
        self.in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, client: str, places: int = 1) -> Callable[[], None]:
        """Take places for client's rows, all or none, or raise; return the call that gives them back, once."""
        if not self.share or places <= 0:
            return lambda: None
        with self._lock:
            if self.in_flight[client] + places > self.share:
                raise RateLimited(
                    f"this client already has {self.in_flight[client]} generations or requests in flight and asks "
                    f"for {places} more, past its share of the server ({self.share}, PALAVER_CLIENT_SHARE); wait "
                    "for one to finish",
                    retry_after=SHARE_RETRY_AFTER_SECONDS,
                    code="client_share_exceeded",
                )
            self.in_flight[client] += places
        given_back = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                self.in_flight[client] -= places
                if self.in_flight[client] <= 0:
                    del self.in_flight[client]

        return give_back
