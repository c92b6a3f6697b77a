"""Per-client fairness: who a request's client is, and the share of in-flight requests each client may hold."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from flask import Response, g, request

from palaver.core.errors import RateLimited
from palaver.core.types import ANONYMOUS, CALLER, Caller
from palaver.web.rate_limits import token_reservation
from palaver.web.security import PROBE_ENDPOINTS, caller_id
from palaver.web.services import services

SHARE_RETRY_AFTER_SECONDS = 2


class ClientShares:
    """Count each client's requests in flight, and refuse one past the client's share with 429."""

    def __init__(self, share: int):
        self.share = share
        self.in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, client: str) -> Callable[[], None]:
        """Take a place for one of client's requests, or raise; return the call that gives it back, once."""
        if not self.share:
            return lambda: None
        with self._lock:
            if self.in_flight[client] >= self.share:
                raise RateLimited(
                    f"this client already has {self.in_flight[client]} requests in flight, its share of the server "
                    "(PALAVER_CLIENT_SHARE); wait for one to finish",
                    retry_after=SHARE_RETRY_AFTER_SECONDS,
                    code="client_share_exceeded",
                )
            self.in_flight[client] += 1
        given_back = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                self.in_flight[client] -= 1
                if self.in_flight[client] <= 0:
                    del self.in_flight[client]

        return give_back


def identify_caller() -> None:
    """Name the request's client, for its budgets and the engine's round-robin; hold a place in its share."""
    g.caller = caller_id()
    # Generation requests made while this request runs take it; teardown puts the thread back to nobody.
    CALLER.set(Caller(g.caller, token_reservation(g.caller)))
    if request.endpoint not in PROBE_ENDPOINTS:
        g.give_back_share = services().shares.take(g.caller)


def hold_share_until_sent(response: Response) -> Response:
    """Give the client's place back once the answer is sent: for a stream, when its last event has gone."""
    give_back = g.pop("give_back_share", None)
    if give_back is not None:
        response.call_on_close(give_back)
    return response


def give_back_share(_error: BaseException | None = None) -> None:
    """Give the place back if no answer took it over (Flask tears a streamed request down before it is sent)."""
    CALLER.set(ANONYMOUS)
    give_back = g.pop("give_back_share", None)
    if give_back is not None:
        give_back()
