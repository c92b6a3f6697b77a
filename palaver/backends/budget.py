"""The memory budget the models share: what they hold or have promised, and which idle ones make room."""

from __future__ import annotations

from palaver.backends.protocol import Backend
from palaver.backends.slot import Slot
from palaver.core.errors import ModelNotReady
from palaver.engine.engine import RETRY_AFTER_SECONDS, Engine
from palaver.engine.memory import HEADROOM_BYTES, cgroup_limit, resident_bytes, weight_bytes


class MemoryBudget:
    """PALAVER_MEMORY_LIMIT (or the cgroup's) shared by every model's weights and KV cache; 0: no limit."""

    def __init__(self, limit: int = 0):
        self.limit = limit or cgroup_limit()
        self.baseline = resident_bytes()  # this process before any model: what models' charges add to

    def make_room(self, slot: Slot, loaded: list[Slot]) -> list[tuple[str, Backend]]:
        """Take the least recently used idle models out so slot fits; 503 if models in use hold the room.

        Return the models taken out (their name and backend), for the caller to unload outside its lock.
        """
        if not self.limit:
            return []
        need = weight_bytes(slot.weights_path()) + HEADROOM_BYTES  # as the native step's loader keeps
        free = self.limit - self.committed(loaded)
        victims = []
        for other in sorted((other for other in loaded if other.idle()), key=lambda other: other.last_used):
            if free >= need:
                break
            victims.append(other)
            free += other.charge()
        if free < need and len(victims) < len(loaded):  # models in use hold the room: unload nothing for nothing
            busy = ", ".join(f"'{other.name}'" for other in loaded if other not in victims)
            raise ModelNotReady(
                f"the model '{slot.name}' needs about {need / 1e6:.0f} MB, and the memory limit "
                f"({self.limit / 1e6:.0f} MB) is held by models in use ({busy}); retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
            )
        detached = []
        for victim in victims:  # taken out now: a request for it from here on loads it afresh
            assert victim.backend is not None
            detached.append((victim.name, victim.backend))
            victim.backend, victim.unloads = None, victim.unloads + 1
        return detached

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
