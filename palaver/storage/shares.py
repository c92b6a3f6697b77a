"""Share links: read-only snapshots of a conversation behind a random token, revocable, copied into a new one."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from palaver.storage.records import StoredConversation, StoredMessage, as_utc, utc_now
from palaver.storage.schema import conversations, messages, shares, visible_to

TOKEN_BYTES = 32  # 256 bits: unguessable, so the database holds only a fast hash of it
SHARE_ID_CHARS = 16  # a share's public id: its hash's first characters, which tell nothing of the token
MAX_LIVE_SHARES = 20  # per conversation: each holds a copy of it
# What token_urlsafe(TOKEN_BYTES) makes; anything else cannot be a link of ours and never reaches the database.
SHARE_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
SHARE_ID = re.compile(rf"[0-9a-f]{{{SHARE_ID_CHARS}}}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ShareSummary(BaseModel):
    """A share as its owner lists it: never its token, which only the link that was handed out holds."""

    model_config = ConfigDict(frozen=True)

    id: str
    conversation_id: str
    title: str
    created_at: datetime


class SharedConversation(BaseModel):
    """A conversation as it was when shared: its title, model and messages."""

    model_config = ConfigDict(frozen=True)

    title: str
    model: str | None
    created_at: datetime
    records: list[StoredMessage]


class ShareStore:
    """Keep share links' snapshots beside the conversations they copy; deleting a conversation deletes them."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self._clock = clock

    def create(self, conversation: StoredConversation, owner: str) -> tuple[str, ShareSummary] | None:
        """Snapshot a whole stored conversation; return the link's token and the share, or None at the cap."""
        token, now = secrets.token_urlsafe(TOKEN_BYTES), self._clock()
        snapshot = json.dumps([record.model_dump(mode="json") for record in conversation.records])
        hashed = token_hash(token)
        live = sa.and_(shares.c.conversation_id == conversation.id, shares.c.revoked_at.is_(None))
        with self.engine.begin() as connection:
            if connection.execute(sa.select(sa.func.count()).where(live)).scalar_one() >= MAX_LIVE_SHARES:
                return None
            connection.execute(
                shares.insert().values(
                    token_hash=hashed,
                    conversation_id=conversation.id,
                    owner=owner,
                    title=conversation.title,
                    model=conversation.model,
                    snapshot=snapshot,
                    created_at=now,
                )
            )
        return token, ShareSummary(
            id=hashed[:SHARE_ID_CHARS], conversation_id=conversation.id, title=conversation.title, created_at=now
        )

    def open(self, token: str) -> SharedConversation | None:
        """Return the snapshot a live link shows; None for a revoked or unknown one alike."""
        if not SHARE_TOKEN.fullmatch(token):
            return None
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(shares.c.title, shares.c.model, shares.c.created_at, shares.c.snapshot).where(
                    shares.c.token_hash == token_hash(token), shares.c.revoked_at.is_(None)
                )
            ).first()
        if row is None:
            return None
        records = [StoredMessage.model_validate(record) for record in json.loads(row.snapshot)]
        return SharedConversation(title=row.title, model=row.model, created_at=as_utc(row.created_at), records=records)

    def listed(self, conversation_id: str, owner: str | None) -> list[ShareSummary]:
        """Return the live shares of a conversation owner may use, newest first."""
        query = (
            sa.select(shares.c.token_hash, shares.c.conversation_id, shares.c.title, shares.c.created_at)
            .join(conversations, conversations.c.id == shares.c.conversation_id)
            .where(shares.c.conversation_id == conversation_id, shares.c.revoked_at.is_(None), visible_to(owner))
            .order_by(shares.c.created_at.desc(), shares.c.token_hash)
        )
        with self.engine.connect() as connection:
            return [
                ShareSummary(
                    id=row.token_hash[:SHARE_ID_CHARS],
                    conversation_id=row.conversation_id,
                    title=row.title,
                    created_at=as_utc(row.created_at),
                )
                for row in connection.execute(query)
            ]

    def revoke(self, share_id: str, owner: str | None, conversation_id: str | None = None) -> bool:
        """End a live share of a conversation owner may use, dropping its copy; return whether there was one."""
        if not SHARE_ID.fullmatch(share_id):
            return False
        # Who may revoke is whoever may use the conversation now, so a conversation that changes hands keeps its links.
        theirs = sa.select(conversations.c.id).where(visible_to(owner))
        if conversation_id is not None:
            theirs = theirs.where(conversations.c.id == conversation_id)
        with self.engine.begin() as connection:
            revoked = connection.execute(
                shares.update()
                .where(
                    shares.c.token_hash.startswith(share_id, autoescape=True),
                    shares.c.revoked_at.is_(None),
                    shares.c.conversation_id.in_(theirs),
                )
                .values(revoked_at=self._clock(), snapshot="[]")
            )
        return revoked.rowcount > 0

    def copy(self, token: str, owner: str | None, client: str | None = None) -> str | None:
        """Start a new conversation of owner's holding a live link's snapshot; return its id, or None for no link."""
        shared = self.open(token)
        if shared is None:
            return None
        conversation_id, now = uuid.uuid4().hex, self._clock()
        turns = len(shared.records) // 2  # a stored conversation holds whole turns: a message and its reply
        rows = [
            {**record.model_dump(), "conversation_id": conversation_id, "position": position}
            for position, record in enumerate(shared.records[: 2 * turns])
        ]
        with self.engine.begin() as connection:
            connection.execute(
                conversations.insert().values(
                    id=conversation_id,
                    owner=owner,
                    client=client,
                    title=shared.title,
                    model=shared.model,
                    turns=turns,
                    created_at=now,
                    updated_at=now,
                )
            )
            if rows:
                connection.execute(messages.insert(), rows)
        return conversation_id
