"""The engine's queue: requests waiting for a place in the batch, taken round-robin across clients."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from palaver.engine.scheduling.embedding import EmbeddingJob
from palaver.engine.scheduling.generation import Job

Queued = Job | EmbeddingJob  # a generation, or texts to embed: each a client's turn


class FairQueue:
    """Hold waiting requests per client and hand them out one client at a time, so no client crowds out the rest."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[str, deque[Queued]] = OrderedDict()  # next client to serve first
        self._changed = threading.Condition()
        self._closed = False

    def put(self, request: Queued) -> None:
        with self._changed:
            self._waiting.setdefault(request.client, deque()).append(request)
            self._changed.notify()

    def close(self) -> None:
        """Have take() return None once the requests already queued are taken."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def take(self, block: bool, limit: int) -> list[Queued | None]:
        """Take up to limit requests, one client at a time; wait for one only if block; None last once closed."""
        taken: list[Queued | None] = []
        with self._changed:
            while block and not self._waiting and not self._closed:
                self._changed.wait()
            while len(taken) < limit and self._waiting:
                client, requests = next(iter(self._waiting.items()))
                taken.append(requests.popleft())
                if requests:
                    self._waiting.move_to_end(client)
                else:
                    del self._waiting[client]
            if self._closed and not self._waiting and len(taken) < limit:
                taken.append(None)
        return taken

    def __len__(self) -> int:
        with self._changed:
            return sum(len(requests) for requests in self._waiting.values())
