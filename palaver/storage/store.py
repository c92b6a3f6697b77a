"""The conversation store: owners' conversations, each turn written in one transaction, swept for retention."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from palaver.core.types import Reply
from palaver.storage import retention
from palaver.storage.database import lowered
from palaver.storage.leases import LEASE_SECONDS, TurnLeases
from palaver.storage.records import (
    MAX_TITLE_CHARS,
    ConversationSummary,
    StoredConversation,
    StoredMessage,
    as_utc,
    auto_title,
    utc_now,
)
from palaver.storage.responses import ResponseStore
from palaver.storage.retention import idle_cutoff
from palaver.storage.schema import conversations, messages, responses, shares, visible_to
from palaver.storage.shares import ShareStore

log = logging.getLogger("palaver.storage")


SUMMARY_COLUMNS = (
    conversations.c.id,
    conversations.c.title,
    conversations.c.preset,
    conversations.c.model,
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
        lease_seconds: float = LEASE_SECONDS,
    ):
        self.engine = engine
        self.max_conversations = max_conversations
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()
        self.responses = ResponseStore(engine, clock)  # /v1/responses' own, swept with the conversations
        self.share_links = ShareStore(engine, clock)  # snapshots behind links, deleted with their conversations
        self.leases = TurnLeases(engine, clock, self._closed, lease_seconds)

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
                    messages.c.reasoning,
                )
                .where(
                    messages.c.conversation_id == conversation_id,
                    messages.c.position >= 2 * turns.start,
                    messages.c.position < 2 * turns.stop,
                )
                .order_by(messages.c.position)
            ).all()
        records = [StoredMessage(**{**r._asdict(), "created_at": as_utc(r.created_at)}) for r in stored]
        head = ConversationSummary.of(row)
        return StoredConversation(**dict(head), records=records, first_turn=turns.start)

    def exists(self, conversation_id: str, owner: str | None = None) -> bool:
        """Tell whether owner may use a conversation that is stored or running its first turn in some process."""
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(conversations.c.id).where(conversations.c.id == conversation_id, visible_to(owner))
            )
            return found.first() is not None

    def owned(
        self,
        owner: str,
        limit: int,
        after: tuple[datetime, str] | None = None,
        matching: str | None = None,
        model: str | None = None,
    ) -> list[ConversationSummary]:
        """Return up to limit of owner's conversations, most recently updated first, from after (time, id) on."""
        query = sa.select(*SUMMARY_COLUMNS).where(conversations.c.owner == owner, conversations.c.turns > 0)
        if model:  # those that run on this model
            query = query.where(conversations.c.model == model)
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

    def count_owned(self, owner: str) -> int:
        """Return how many conversations owner has, with at least one turn."""
        query = sa.select(sa.func.count()).where(conversations.c.owner == owner, conversations.c.turns > 0)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def transfer(self, owner: str, new_owner: str) -> int:
        """Give everything owner has (conversations, their shares, stored responses) to new_owner; return how many."""
        with self.engine.begin() as connection:
            moved = connection.execute(
                conversations.update().where(conversations.c.owner == owner).values(owner=new_owner)
            ).rowcount
            connection.execute(shares.update().where(shares.c.owner == owner).values(owner=new_owner))
            connection.execute(responses.update().where(responses.c.owner == owner).values(owner=new_owner))
        return moved

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
        model: str | None = None,
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
                        reasoning="",
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
                        reasoning=reply.reasoning,
                    ),
                ],
            )
            connection.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id)
                .values(turns=turn + 1, preset=preset, model=model, updated_at=now)
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
        """Delete conversations (and responses) idle too long, then trim the largest client pools past the cap.

        Return how many went.
        """
        cutoff = idle_cutoff(self._clock(), self.idle_seconds)
        removed = retention.sweep(self.engine, self.max_conversations, cutoff)
        return removed + self.responses.sweep(self.max_conversations, cutoff)

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
                        log.info("retention sweep deleted %d conversations and responses", removed)
                except Exception:  # a database hiccup must not end the sweeper
                    log.exception("retention sweep failed")

        self._sweeper = threading.Thread(target=run, name="palaver-sweeper", daemon=True)
        self._sweeper.start()
