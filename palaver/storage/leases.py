"""Turn leases: one process at a time runs a conversation's turn, renewing its lease while it lives."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from palaver.storage.schema import conversations, visible_to

log = logging.getLogger("palaver.storage")
LEASE_SECONDS = 15.0  # a turn's lease outlives this many seconds without renewal only if its process died
HEARTBEAT_SECONDS = 0.25  # also how soon Stop pressed in another process reaches the turn


class TurnLeases:
    """Take and give back conversations' turns in the database, and pass Stop between processes."""

    def __init__(
        self,
        engine: sa.Engine,
        clock: Callable[[], datetime],
        closed: threading.Event,
        lease_seconds: float = LEASE_SECONDS,
    ):
        self.engine = engine
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._closed = closed
        self._heartbeat: threading.Thread | None = None
        self._held: dict[str, str] = {}  # conversation id -> lease token, for the turns this process runs
        self._held_lock = threading.Lock()

    def acquire(self, conversation_id: str, token: str, owner: str | None = None, client: str | None = None) -> bool:
        """Take the turn of a conversation owner may use, unless another live lease holds it; create it if new."""
        now = self._clock()
        until = now + timedelta(seconds=self.lease_seconds)
        free = sa.or_(conversations.c.lease_token.is_(None), conversations.c.lease_until < now)
        with self.engine.begin() as connection:
            # Another owner's conversation is never taken: to its caller it stays busy, and nothing is written.
            taken = connection.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id, free, visible_to(owner))
                .values(lease_token=token, lease_until=until, cancel_requested=False)
            )
            if taken.rowcount:
                self._hold(conversation_id, token)
                return True
            if connection.execute(sa.select(conversations.c.id).where(conversations.c.id == conversation_id)).first():
                return False
        try:  # a new conversation: its row appears now, empty, so that a second message finds the turn taken
            with self.engine.begin() as connection:
                connection.execute(
                    conversations.insert().values(
                        id=conversation_id,
                        owner=owner,
                        client=client,
                        title="",
                        turns=0,
                        created_at=now,
                        updated_at=now,
                        lease_token=token,
                        lease_until=until,
                    )
                )
        except sa.exc.IntegrityError:  # another process created it first: its turn runs
            return False
        self._hold(conversation_id, token)
        return True

    def release(self, conversation_id: str, token: str) -> None:
        """Give the turn back; a conversation whose first turn failed is removed, so nothing is left of it."""
        with self._held_lock:
            self._held.pop(conversation_id, None)
        mine = sa.and_(conversations.c.id == conversation_id, conversations.c.lease_token == token)
        with self.engine.begin() as connection:
            connection.execute(conversations.delete().where(mine, conversations.c.turns == 0))
            connection.execute(
                conversations.update().where(mine).values(lease_token=None, lease_until=None, cancel_requested=False)
            )

    def request_cancel(self, conversation_id: str) -> bool:
        """Ask whichever process runs the conversation's turn to stop it; return whether a turn is running."""
        with self.engine.begin() as connection:
            asked = connection.execute(
                conversations.update()
                .where(
                    conversations.c.id == conversation_id,
                    conversations.c.lease_token.is_not(None),
                    conversations.c.lease_until >= self._clock(),
                )
                .values(cancel_requested=True)
            )
        return asked.rowcount > 0

    def watch(self, on_cancel: Callable[[str, str], object]) -> None:
        """Renew this process's leases every HEARTBEAT_SECONDS; call on_cancel(id, token) for turns that must stop."""
        if self._heartbeat is not None:
            return

        def run() -> None:
            while not self._closed.wait(HEARTBEAT_SECONDS):
                with self._held_lock:
                    held = dict(self._held)
                if not held:
                    continue
                try:
                    for conversation_id in self._renew(held):
                        on_cancel(conversation_id, held[conversation_id])
                except Exception:  # a database hiccup must not end the heartbeat; leases outlive a few misses
                    log.exception("renewing turn leases failed")

        self._heartbeat = threading.Thread(target=run, name="palaver-leases", daemon=True)
        self._heartbeat.start()

    def _renew(self, held: dict[str, str]) -> list[str]:
        """Extend held leases; return the conversations whose turn must stop: Stop asked for, deleted, or lost."""
        until = self._clock() + timedelta(seconds=self.lease_seconds)
        tokens = list(held.values())
        with self.engine.begin() as connection:
            connection.execute(
                conversations.update().where(conversations.c.lease_token.in_(tokens)).values(lease_until=until)
            )
            rows = connection.execute(
                sa.select(conversations.c.id, conversations.c.cancel_requested).where(
                    conversations.c.lease_token.in_(tokens)
                )
            )
            cancel_requested = {row.id: row.cancel_requested for row in rows}
        return [conversation_id for conversation_id in held if cancel_requested.get(conversation_id, True)]

    def _hold(self, conversation_id: str, token: str) -> None:
        with self._held_lock:
            self._held[conversation_id] = token
