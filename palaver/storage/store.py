"""The conversation store: owners' conversations, each turn written in one transaction, and a retention sweep."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from palaver.storage.database import lowered
from palaver.storage.leases import TurnLeases
from palaver.storage.schema import conversations, messages, visible_to
from palaver.types import Message, Reply

log = logging.getLogger("palaver.storage")
AUTO_TITLE_CHARS = 80  # a conversation is titled by the start of its first message until it is renamed
MAX_TITLE_CHARS = 200


def auto_title(text: str) -> str:
    """Title a conversation by the start of its first message, on one line."""
    return " ".join(text.split())[:AUTO_TITLE_CHARS]


def fair_level(sizes: list[int], cap: int) -> int:
    """Return the largest per-pool size that keeps the pools, each cut down to it, within cap in all.

    Trimming every pool to this level removes conversations only from the largest pools: a client that floods
    the store shrinks its own pool, and a client holding fewer than the level loses nothing.
    """
    if sum(sizes) <= cap:
        return max(sizes, default=0)
    low, high = 0, max(sizes)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(size, middle) for size in sizes) <= cap:
            low = middle
        else:
            high = middle - 1
    return low


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return a stored time as an aware UTC time: SQLite gives back the naive UTC time it was given."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str
    created_at: datetime
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    seconds: float | None = None

    @property
    def message(self) -> Message:
        return Message(self.role, self.content)


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    preset: str | None
    turns: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: sa.Row) -> ConversationSummary:
        return cls(row.id, row.title, row.preset, row.turns, as_utc(row.created_at), as_utc(row.updated_at))


@dataclass(frozen=True)
class StoredConversation(ConversationSummary):
    records: list[StoredMessage] = field(default_factory=list)  # all of its messages, or those of a window
    first_turn: int = 0  # the turn records start at

    @property
    def messages(self) -> list[Message]:
        return [record.message for record in self.records]


SUMMARY_COLUMNS = (
    conversations.c.id,
    conversations.c.title,
    conversations.c.preset,
    conversations.c.turns,
    conversations.c.created_at,
    conversations.c.updated_at,
)


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
        self._closed = threading.Event()
        self.leases = TurnLeases(engine, clock, self._closed)

    def get(
        self, conversation_id: str, owner: str | None = None, window: Callable[[int], range] | None = None
    ) -> StoredConversation | None:
        """Return a conversation owner may see, with its messages in order; None before its first turn is stored.

        window maps the stored turn count to the turns to read; by default, all of them.
        """
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(*SUMMARY_COLUMNS).where(conversations.c.id == conversation_id, visible_to(owner))
            ).first()
            if row is None or row.turns == 0:
                return None
            turns = window(row.turns) if window else range(row.turns)
            stored = connection.execute(
                sa.select(
                    messages.c.role,
                    messages.c.content,
                    messages.c.created_at,
                    messages.c.prompt_tokens,
                    messages.c.completion_tokens,
                    messages.c.finish_reason,
                    messages.c.seconds,
                )
                .where(
                    messages.c.conversation_id == conversation_id,
                    messages.c.position >= 2 * turns.start,
                    messages.c.position < 2 * turns.stop,
                )
                .order_by(messages.c.position)
            ).all()
        records = [StoredMessage(r.role, r.content, as_utc(r.created_at), *r[3:]) for r in stored]
        return StoredConversation(**vars(ConversationSummary.of(row)), records=records, first_turn=turns.start)

    def exists(self, conversation_id: str, owner: str | None = None) -> bool:
        """Tell whether owner may use a conversation that is stored or running its first turn in some process."""
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(conversations.c.id).where(conversations.c.id == conversation_id, visible_to(owner))
            )
            return found.first() is not None

    def owned(
        self, owner: str, limit: int, after: tuple[datetime, str] | None = None, matching: str | None = None
    ) -> list[ConversationSummary]:
        """Return up to limit of owner's conversations, most recently updated first, from after (time, id) on."""
        query = sa.select(*SUMMARY_COLUMNS).where(conversations.c.owner == owner, conversations.c.turns > 0)
        if matching:  # in the title or any message, ignoring case; % and _ are matched as themselves
            needle = matching.lower()
            in_title = lowered(self.engine, conversations.c.title).contains(needle, autoescape=True)
            in_text = sa.exists().where(
                messages.c.conversation_id == conversations.c.id,
                lowered(self.engine, messages.c.content).contains(needle, autoescape=True),
            )
            query = query.where(sa.or_(in_title, in_text))
        if after is not None:
            updated_at, conversation_id = after
            query = query.where(
                sa.or_(
                    conversations.c.updated_at < updated_at,
                    sa.and_(conversations.c.updated_at == updated_at, conversations.c.id < conversation_id),
                )
            )
        query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [ConversationSummary.of(row) for row in connection.execute(query)]

    def rename(self, conversation_id: str, owner: str | None, title: str) -> bool:
        """Retitle a conversation owner may use; return whether there was one."""
        with self.engine.begin() as connection:
            renamed = connection.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id, conversations.c.turns > 0, visible_to(owner))
                .values(title=title[:MAX_TITLE_CHARS])
            )
        return renamed.rowcount > 0

    def add_turn(
        self,
        conversation_id: str,
        preset: str | None,
        user_text: str,
        reply: Reply,
        seconds: float | None = None,
        replace_last: bool = False,
    ) -> bool:
        """Write a user message and its reply in one transaction, or put them in place of the last turn's.

        Return False if the conversation was deleted meanwhile.
        """
        now = self._clock()
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(conversations.c.turns, conversations.c.title).where(conversations.c.id == conversation_id)
            ).first()
            if row is None:  # its row appears when its first turn takes the lease, so it was deleted since
                return False
            turn = row.turns - 1 if replace_last and row.turns else row.turns
            if turn == 0 and (row.turns == 0 or row.title == self._first_title(connection, conversation_id)):
                connection.execute(  # a new first message renames the conversation, unless the owner named it
                    conversations.update()
                    .where(conversations.c.id == conversation_id)
                    .values(title=auto_title(user_text), **({} if row.turns else {"created_at": now}))
                )
            connection.execute(
                messages.delete().where(messages.c.conversation_id == conversation_id, messages.c.position >= 2 * turn)
            )
            usage = reply.usage
            connection.execute(
                messages.insert(),
                [
                    dict(
                        conversation_id=conversation_id,
                        position=2 * turn,
                        role="user",
                        content=user_text,
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=None,
                        finish_reason=None,
                        created_at=now,
                        seconds=None,
                    ),
                    dict(
                        conversation_id=conversation_id,
                        position=2 * turn + 1,
                        role="assistant",
                        content=reply.text,
                        prompt_tokens=None,
                        completion_tokens=usage.completion_tokens,
                        finish_reason=reply.finish_reason,
                        created_at=now,
                        seconds=seconds,
                    ),
                ],
            )
            connection.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id)
                .values(turns=turn + 1, preset=preset, updated_at=now)
            )
        return True

    @staticmethod
    def _first_title(connection: sa.Connection, conversation_id: str) -> str:
        first = connection.execute(
            sa.select(messages.c.content).where(messages.c.conversation_id == conversation_id, messages.c.position == 0)
        ).scalar()
        return auto_title(first or "")

    def delete(self, conversation_id: str, owner: str | None = None) -> bool:
        """Delete a conversation owner may use, with its messages; return whether there was one."""
        with self.engine.begin() as connection:
            deleted = connection.execute(
                conversations.delete().where(conversations.c.id == conversation_id, visible_to(owner))
            )
            if deleted.rowcount:
                connection.execute(messages.delete().where(messages.c.conversation_id == conversation_id))
        return deleted.rowcount > 0

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one()

    def sweep(self) -> int:
        """Delete conversations idle too long, then trim the largest client pools past the cap; return how many."""
        cutoff = self._clock() - timedelta(seconds=self.idle_seconds)
        with self.engine.begin() as connection:
            idle = sa.select(conversations.c.id).where(conversations.c.updated_at < cutoff)
            doomed_ids: list[str] = list(connection.execute(idle).scalars())
            pool = sa.func.coalesce(conversations.c.client, "")
            counted = sa.select(pool, sa.func.count()).where(conversations.c.updated_at >= cutoff).group_by(pool)
            sizes = {str(row[0]): int(row[1]) for row in connection.execute(counted)}
            level = fair_level(list(sizes.values()), self.max_conversations)
            for client, size in sizes.items():
                if size > level:  # this pool's least recently used go, down to the level every pool fits under
                    oldest = (
                        sa.select(conversations.c.id)
                        .where(pool == client, conversations.c.updated_at >= cutoff)
                        .order_by(conversations.c.updated_at, conversations.c.id)
                        .limit(size - level)
                    )
                    doomed_ids += connection.execute(oldest).scalars()
            for start in range(0, len(doomed_ids), 500):
                chunk = doomed_ids[start : start + 500]
                connection.execute(messages.delete().where(messages.c.conversation_id.in_(chunk)))
                connection.execute(conversations.delete().where(conversations.c.id.in_(chunk)))
        return len(doomed_ids)

    def close(self) -> None:
        """Stop the background threads and close the database's connections."""
        self._closed.set()
        self.engine.dispose()

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
