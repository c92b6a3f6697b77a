"""What the store hands out: a conversation's summary (as the API shows it too), its messages, and the whole."""

from __future__ import annotations

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
