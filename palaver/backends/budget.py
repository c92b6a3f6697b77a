"""The memory budget the models share: what they hold or have promised, and which idle ones make room."""

from __future__ import annotations

from palaver.backends.slot import Slot
from palaver.core.errors import ModelNotReady
from palaver.engine.engine import RETRY_AFTER_SECONDS, Engine
from palaver.engine.machine import HEADROOM_BYTES, cgroup_limit, resident_bytes


class RoomInUse(ModelNotReady):
    """The room a model needs is held by models in use: it may come free once their requests end."""

    def __init__(self, message: str, busy: list[Slot]):
        super().__init__(message, retry_after=RETRY_AFTER_SECONDS)
        self.busy = busy


class MemoryBudget:
    """PALAVER_MEMORY_LIMIT (or the cgroup's) shared by every model's weights and KV cache; 0: no limit."""

    def __init__(self, limit: int = 0):
        self.limit = limit or cgroup_limit()
        self.baseline = resident_bytes()  # this process before any model: what models' charges add to

    def plan_room(self, slot: Slot, loaded: list[Slot]) -> list[Slot]:
        """Return the idle models to unload, least recently used first, so slot fits; 503 naming why if it cannot.

        Nothing is unloaded here: a model that would not fit even then is refused before anything goes.
        """
        if not self.limit:
            return []
        need = slot.need() + HEADROOM_BYTES  # as the native step's loader keeps
        # Never fits, by its files: a measured footprint can hold what other threads took during the load, and
        # refusing by it would refuse the model for good; planning room below still goes by it.
        least = slot.file_need() + HEADROOM_BYTES
        if least > self.limit - self.baseline:
            raise ModelNotReady(
                f"the model '{slot.name}' needs about {least / 1e6:.0f} MB, more than the memory limit "
                f"({self.limit / 1e6:.0f} MB, PALAVER_MEMORY_LIMIT or the cgroup's) leaves beside the server itself "
                f"({self.baseline / 1e6:.0f} MB)",
                retry_after=RETRY_AFTER_SECONDS,
            )
        free = self.limit - self.committed(loaded)
        victims: list[Slot] = []
        for other in sorted((other for other in loaded if other.idle()), key=lambda other: other.last_used):
            if free >= need:
                break
            victims.append(other)
            free += other.charge()
        if free < need:
            busy = [other for other in loaded if other not in victims]
            names = ", ".join(f"'{other.name}'" for other in busy)
            held = f"held by models in use ({names})" if busy else "not free yet"
            raise RoomInUse(
                f"the model '{slot.name}' needs about {need / 1e6:.0f} MB, and the memory limit "
                f"({self.limit / 1e6:.0f} MB) is {held}; retry shortly",
                busy,
            )
        return victims

    def limit_for(self, others: list[Slot]) -> int:
        """Return the limit a new model's loader sizes its KV cache by: what the others have not committed."""
        return max(1, self.limit - (self.committed(others) - resident_bytes()))

    def committed(self, loaded: list[Slot]) -> int:
        """Return the bytes this process holds or has promised: resident, or what the loaded models charge.

        A model's weights may not be resident yet (a mapped file is read as it is used), and a KV cache's budget
        is reserved before it is touched: the larger of the two counts keeps both within the limit.
        """
        charged = self.baseline + sum(other.charge() for other in loaded)
        return max(resident_bytes() + self.reserved_unused(loaded), charged)

    @staticmethod
    def reserved_unused(loaded: list[Slot]) -> int:
        """Return the KV budget loaded models have reserved and not touched yet: theirs, though not resident."""
        total = 0
        for other in loaded:
            if isinstance(other.backend, Engine):
                budget, used = other.backend.kv_bytes()
                total += budget - used
        return total
