"""Memory for finished turns on their way to disk, faulted in before the engine copies into it."""

from __future__ import annotations

import mmap
import threading

GRANULE = 2 << 20  # capacities are whole multiples: turns of nearby lengths share a spare
HEADROOM = 1.25  # a conversation's next turn is longer than its last: its spare has room for it
# Without MAP_POPULATE (not Linux) a buffer faults in on first touch, as numpy's would.
_FLAGS = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)


class ExportBuffers:
    """Buffers lent to the engine for one turn's export and given back once it is written, within one bound.

    A fresh 46 MB array faults its pages in while the engine copies into it: 40 to 120 ms on the engine thread, where
    every other row waits. A buffer given back after its write is kept as a spare, and the writer maps the next one
    ahead (the kernel fills it at once, with the interpreter free), so the engine's export is the copy alone.
    """

    def __init__(self, most_bytes: int):
        self.most_bytes = most_bytes  # lent and spare buffers together
        self.mapped = 0  # buffers mapped so far
        self._lock = threading.Lock()
        self._spares: list[mmap.mmap] = []
        self._lent = 0  # bytes of buffers lent, until given back
        self._wanted = 0  # the largest turn asked for since the spares were last dropped

    def take(self, size: int) -> mmap.mmap | None:
        """Lend a buffer of at least size bytes, a spare where one fits; None where the bound leaves no room."""
        with self._lock:
            self._wanted = max(self._wanted, size)
            fitting = [spare for spare in self._spares if len(spare) >= size]
            if fitting:
                buffer = min(fitting, key=len)
                self._spares.remove(buffer)
                self._lent += len(buffer)
                return buffer
            capacity = _capacity(size)
            if self._lent + capacity > self.most_bytes:
                capacity = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE  # no headroom rather than no buffer
            if self._lent + capacity > self.most_bytes:
                return None
            while self._spares and self._held() + capacity > self.most_bytes:
                self._spares.remove(min(self._spares, key=len))
            self._lent += capacity
        return self._map(capacity)

    def give_back(self, buffer: mmap.mmap) -> None:
        """Keep a written turn's buffer as a spare where the bound allows; else unmap it."""
        with self._lock:
            self._lent -= len(buffer)
            if self._held() + len(buffer) <= self.most_bytes:
                self._spares.append(buffer)

    def prepare(self) -> None:
        """Map a spare for the largest turn asked for, where none fits it and the bound has room."""
        with self._lock:
            capacity = _capacity(self._wanted)
            if self._wanted == 0 or any(len(spare) >= self._wanted for spare in self._spares):
                return
            if self._held() + capacity > self.most_bytes:
                return
            self._lent += capacity  # counted while it is mapped, outside the lock
        buffer = self._map(capacity)
        if buffer is not None:
            self.give_back(buffer)

    def drop_spares(self) -> None:
        """Unmap the spares: the server is idle, and their memory goes back."""
        with self._lock:
            self._spares.clear()
            self._wanted = 0

    def held_bytes(self) -> int:
        """Return the bytes of buffers lent or spare."""
        with self._lock:
            return self._held()

    def _held(self) -> int:
        return self._lent + sum(len(spare) for spare in self._spares)

    def _map(self, capacity: int) -> mmap.mmap | None:
        try:
            buffer = mmap.mmap(-1, capacity, flags=_FLAGS)  # CPython lets other threads run while the kernel fills it
        except OSError:  # out of memory: a turn not stored, never a reply lost
            with self._lock:
                self._lent -= capacity
            return None
        with self._lock:
            self.mapped += 1
        return buffer


def _capacity(size: int) -> int:
    return -(-int(size * HEADROOM) // GRANULE) * GRANULE
