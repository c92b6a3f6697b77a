"""The conversation store: each finished turn written in one transaction, and a sweep that applies retention."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from palaver.storage.schema import conversations, messages
from palaver.types import Message, Reply

log = logging.getLogger("palaver.storage")
TITLE_CHARS = 80
LEASE_SECONDS = 15  # a turn's lease outlives this many seconds without renewal only if its process died
HEARTBEAT_SECONDS = 0.25  # also how soon Stop pressed in another process reaches the turn


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StoredConversation:
    id: str
    title: str
    preset: str | None
    created_at: datetime
    updated_at: datetime
    messages: list[Message] = field(default_factory=list)


class ConversationStore:
    """Keep conversations in a SQL database, bounded by idle time and count through a background sweep."""

    def __init__(
        self,
        engine: sa.Engine,
        max_conversations: int,
        idle_seconds: float,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.engine = engine
        self.max_conversations = max_conversations
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sweeper: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._held: dict[str, str] = {}  # conversation id -> lease token, for the turns this process runs
        self._held_lock = threading.Lock()
        self._closed = threading.Event()

    def get(self, conversation_id: str) -> StoredConversation | None:
        """Return a conversation with its messages in order, or None before its first turn is stored."""
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(conversations).where(conversations.c.id == conversation_id)).first()
            if row is None or row.turns == 0:
                return None
            stored = connection.execute(
                sa.select(messages.c.role, messages.c.content)
                .where(messages.c.conversation_id == conversation_id)
                .order_by(messages.c.position)
            ).all()
        return StoredConversation(
            row.id, row.title, row.preset, row.created_at, row.updated_at, [Message(r.role, r.content) for r in stored]
        )

    def exists(self, conversation_id: str) -> bool:
        """Tell whether a conversation is stored or running its first turn in some process."""
        with self.engine.connect() as connection:
            found = connection.execute(sa.select(conversations.c.id).where(conversations.c.id == conversation_id))
            return found.first() is not None

    def add_turn(self, conversation_id: str, preset: str | None, user_text: str, reply: Reply) -> None:
        """Write a user message and its reply in one transaction, creating the conversation on its first turn."""
        now = self._clock()
        with self.engine.begin() as connection:
            turns = connection.execute(
                sa.select(conversations.c.turns).where(conversations.c.id == conversation_id)
            ).scalar()
            if turns is None:
                turns = 0
                connection.execute(
                    conversations.insert().values(
                        id=conversation_id,
                        title=user_text[:TITLE_CHARS],
                        preset=preset,
                        turns=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
            elif turns == 0:  # created empty when its first turn began
                connection.execute(
                    conversations.update()
                    .where(conversations.c.id == conversation_id)
                    .values(title=user_text[:TITLE_CHARS], created_at=now)
                )
            usage = reply.usage
            connection.execute(
                messages.insert(),
                [
                    dict(
                        conversation_id=conversation_id,
                        position=2 * turns,
                        role="user",
                        content=user_text,
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=None,
                        finish_reason=None,
                        created_at=now,
                    ),
                    dict(
                        conversation_id=conversation_id,
                        position=2 * turns + 1,
                        role="assistant",
                        content=reply.text,
                        prompt_tokens=None,
                        completion_tokens=usage.completion_tokens,
                        finish_reason=reply.finish_reason,
                        created_at=now,
                    ),
                ],
            )
            connection.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id)
                .values(turns=turns + 1, preset=preset, updated_at=now)
            )

    def delete(self, conversation_id: str) -> bool:
        """Delete a conversation and its messages; return whether it existed."""
        with self.engine.begin() as connection:
            connection.execute(messages.delete().where(messages.c.conversation_id == conversation_id))
            deleted = connection.execute(conversations.delete().where(conversations.c.id == conversation_id))
        return deleted.rowcount > 0

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one()

    def sweep(self) -> int:
        """Delete conversations idle too long, then the least recently used beyond the cap; return how many."""
        cutoff = self._clock() - timedelta(seconds=self.idle_seconds)
        with self.engine.begin() as connection:
            idle = sa.select(conversations.c.id).where(conversations.c.updated_at < cutoff)
            keep = (
                sa.select(conversations.c.id).order_by(conversations.c.updated_at.desc()).limit(self.max_conversations)
            )
            over = sa.select(conversations.c.id).where(conversations.c.id.not_in(keep.scalar_subquery()))
            doomed = [*connection.execute(idle).scalars(), *connection.execute(over).scalars()]
            doomed = list(dict.fromkeys(doomed))
            for start in range(0, len(doomed), 500):
                chunk = doomed[start : start + 500]
                connection.execute(messages.delete().where(messages.c.conversation_id.in_(chunk)))
                connection.execute(conversations.delete().where(conversations.c.id.in_(chunk)))
        return len(doomed)

    def acquire(self, conversation_id: str, token: str) -> bool:
        """Take the conversation's turn for token unless another live lease holds it; create it if new."""
        now = self._clock()
        until = now + timedelta(seconds=LEASE_SECONDS)
        free = sa.or_(conversations.c.lease_token.is_(None), conversations.c.lease_until < now)
        with self.engine.begin() as connection:
            taken = connection.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id, free)
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

    def watch(self, on_cancel: Callable[[str], object]) -> None:
        """Renew this process's leases every HEARTBEAT_SECONDS, and pass on Stop asked for in another process."""
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
                        on_cancel(conversation_id)
                except Exception:  # a database hiccup must not end the heartbeat; leases outlive a few misses
                    log.exception("renewing turn leases failed")

        self._heartbeat = threading.Thread(target=run, name="palaver-leases", daemon=True)
        self._heartbeat.start()

    def _renew(self, held: dict[str, str]) -> list[str]:
        until = self._clock() + timedelta(seconds=LEASE_SECONDS)
        with self.engine.begin() as connection:
            connection.execute(
                conversations.update()
                .where(conversations.c.lease_token.in_(list(held.values())))
                .values(lease_until=until)
            )
            return list(
                connection.execute(
                    sa.select(conversations.c.id).where(
                        conversations.c.lease_token.in_(list(held.values())), conversations.c.cancel_requested
                    )
                ).scalars()
            )

    def close(self) -> None:
        """Stop the background threads and close the database's connections."""
        self._closed.set()
        self.engine.dispose()

    def _hold(self, conversation_id: str, token: str) -> None:
        with self._held_lock:
            self._held[conversation_id] = token

    def start_sweeping(self, interval: float = 60) -> None:
        """Sweep on a background thread every interval seconds, so retention never delays a request."""
        if self._sweeper is not None:
            return

        def run() -> None:
            while not self._closed.wait(interval):
                try:
                    removed = self.sweep()
                    if removed:
                        log.info("retention sweep deleted %d conversations", removed)
                except Exception:  # a database hiccup must not end the sweeper
                    log.exception("retention sweep failed")

        self._sweeper = threading.Thread(target=run, name="palaver-sweeper", daemon=True)
        self._sweeper.start()
