"""What the stores hand out: a conversation's summary (as the API shows it too), its messages, the whole; people."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from palaver.core.types import Message

AUTO_TITLE_CHARS = 80  # a conversation is titled by the start of its first message until it is renamed
MAX_TITLE_CHARS = 200


def auto_title(text: str) -> str:
    """Title a conversation by the start of its first message, on one line."""
    return " ".join(text.split())[:AUTO_TITLE_CHARS]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return a stored time as an aware UTC time: SQLite gives back the naive UTC time it was given."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class StoredMessage(BaseModel):
    """One stored message, with its time, token counts and how its reply ended."""

    model_config = ConfigDict(frozen=True)

    role: str
    content: str
    created_at: datetime
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    seconds: float | None = Field(None, description="How long the reply took, for a reply.")
    reasoning: str = Field("", description="A thinking model's reasoning before its reply, apart from content.")

    @property
    def message(self) -> Message:
        return Message(self.role, self.content)


class ConversationSummary(BaseModel):
    """A conversation without its messages: one type for the store, the listing API and an export's head."""

    model_config = ConfigDict(frozen=True, serialize_by_alias=True)

    id: str = Field(serialization_alias="conversation_id")
    title: str
    preset: str | None
    model: str | None = None  # the configured model it runs on; None: the server's default
    turns: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: sa.Row) -> ConversationSummary:
        return cls(
            id=row.id,
            title=row.title,
            preset=row.preset,
            model=row.model,
            turns=row.turns,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )


class StoredConversation(ConversationSummary):
    """A conversation with its messages: all of them (an export), or those of a window (a page, a prompt)."""

    records: list[StoredMessage] = Field(default_factory=list, serialization_alias="messages")
    first_turn: int = Field(0, exclude=True)  # the turn records start at

    @property
    def messages(self) -> list[Message]:
        return [record.message for record in self.records]


@dataclass(frozen=True)
class Person:
    """An account: who it is, its role (admin or member) and state (pending, active or disabled); never its secrets."""

    id: str
    login: str
    display_name: str
    role: str
    state: str
    created_at: datetime
    last_seen_at: datetime | None = None
    identity: str | None = None  # "oidc:<issuer>|<subject>" or "header:<value>"; None for a password account

    @property
    def name(self) -> str:
        return self.display_name or self.login

    @property
    def owner(self) -> str:
        """Return the owner the person's conversations carry, from every browser and key alike."""
        return f"person:{self.id}"

    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, row: sa.Row) -> Person:
        last_seen = row.last_seen_at
        return cls(
            id=row.id,
            login=row.login,
            display_name=row.display_name,
            role=row.role,
            state=row.state,
            created_at=as_utc(row.created_at),
            last_seen_at=as_utc(last_seen) if last_seen else None,
            identity=row.identity,
        )


@dataclass(frozen=True)
class PersonKey:
    """One of a person's API keys as its list shows it: its name and first characters, never the secret."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: sa.Row) -> PersonKey:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=as_utc(row.created_at),
            last_used_at=as_utc(row.last_used_at) if row.last_used_at else None,
            revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
        )
