"""Model switches each client may cause: loads that unload another model, counted per client over a minute."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from palaver.core.errors import RateLimited

WINDOW_SECONDS = 60.0


class SwitchBudget:
    """Count each client's model switches over the last minute, and refuse one past PALAVER_CLIENT_SWITCHES."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._switches: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def charge(self, client: str, model: str, unloading: list[str]) -> None:
        """Count a switch to model for client, or raise 429 if it has made its minute's share of them."""
        if not self.per_minute or not client:  # the server's own loads (preload, the CLI) are nobody's
            return
        with self._lock:
            now = self.clock()
            self._forget_before(now - WINDOW_SECONDS)
            switches = self._switches.setdefault(client, deque())
            if len(switches) >= self.per_minute:
                wait = math.ceil(switches[0] + WINDOW_SECONDS - now)
                unloaded = ", ".join(f"'{name}'" for name in unloading)
                raise RateLimited(
                    f"loading '{model}' would unload {unloaded}, and this client has already made "
                    f"{len(switches)} such switches in the last minute (PALAVER_CLIENT_SWITCHES); retry in {wait} s",
                    retry_after=max(1, wait),
                    code="model_switches_exceeded",
                )
            switches.append(now)

    def _forget_before(self, cutoff: float) -> None:
        """Drop switches older than the window, and clients left with none, so memory stays bounded."""
        for client in list(self._switches):
            switches = self._switches[client]
            while switches and switches[0] < cutoff:
                switches.popleft()
            if not switches:
                del self._switches[client]
