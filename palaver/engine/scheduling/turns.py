"""Steps in turn: the models of one server compute one step at a time, in the order they asked (round robin)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class StepTurns:
    """A first-come, first-served lock: a model that has just stepped queues behind the others that wait."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._busy = False
        self.turns_taken = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this caller's turn, then hold it while the body runs."""
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            while self._busy or self._queue[0] is not ticket:
                self._changed.wait()
            self._queue.popleft()
            self._busy = True
            self.turns_taken += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
