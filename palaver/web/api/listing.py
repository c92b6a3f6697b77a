"""Listing conversations: the page of an owner's conversations, its cursor and search, and a rename."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from datetime import UTC, datetime

from pydantic import BaseModel, Field, field_validator

from palaver.core.validation import RequestModel, field_error
from palaver.storage.records import MAX_TITLE_CHARS, ConversationSummary

MAX_PAGE_SIZE = 100
# What Palaver hands out (uuid4 hex), with room for the ids older versions made. Anything else cannot exist,
# and must not reach the database: PostgreSQL refuses a NUL in text with an error, not a miss.
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_conversation_id(text: str) -> bool:
    return CONVERSATION_ID.fullmatch(text) is not None


def encode_cursor(summary: ConversationSummary) -> str:
    """Return the opaque cursor of the page after summary: its update time and id."""
    return base64.urlsafe_b64encode(f"{summary.updated_at.isoformat()}|{summary.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        moment, _, conversation_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        updated_at = datetime.fromisoformat(moment)
        if updated_at.tzinfo is None or not is_conversation_id(conversation_id):
            raise ValueError("not a cursor")
        return updated_at.astimezone(UTC), conversation_id  # SQLite compares the UTC time's digits
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise field_error("must be the next_cursor of an earlier page") from None


def printable(text: str) -> str:
    """Return text if it holds no control character (nor a lone surrogate), or refuse it."""
    if any(unicodedata.category(character) in ("Cc", "Cs") for character in text):
        raise field_error("must not contain control characters")
    return text


class SearchQuery(RequestModel):
    """The sidebar's and the list's search: conversations whose title or messages hold some text, in any case."""

    q: str | None = Field(
        None, max_length=200, description="Only conversations whose title or messages hold this text, in any case."
    )

    model: str | None = Field(None, max_length=100, description="Only conversations that run on this model.")

    @field_validator("q")
    @classmethod
    def _search_text(cls, text: str) -> str | None:
        return printable(text).strip() or None

    @field_validator("model")
    @classmethod
    def _model_name(cls, name: str) -> str | None:
        return printable(name).strip() or None


class ConversationListQuery(SearchQuery):
    """GET /api/conversations: a page of the caller's conversations, most recently active first."""

    limit: int = Field(20, ge=1, le=MAX_PAGE_SIZE, description="How many conversations to return.")
    cursor: str | None = Field(None, max_length=200, description="The next_cursor of the previous page.")

    @field_validator("cursor")
    @classmethod
    def _cursor_decodes(cls, cursor: str) -> str:
        decode_cursor(cursor)
        return cursor

    def after(self) -> tuple[datetime, str] | None:
        """Return where this page starts: after the (update time, id) of the previous page's last conversation."""
        return decode_cursor(self.cursor) if self.cursor else None


class ConversationView(SearchQuery):
    """GET / and GET /c/<id>: the sidebar's search, and which of the conversation's turns to show."""

    before: int | None = Field(
        None, ge=1, le=10**9, description="Show the turns before this one (counted from 0): earlier messages."
    )


class RenameRequest(RequestModel):
    """PATCH /api/conversations/<id>: a new title."""

    title: str = Field(max_length=MAX_TITLE_CHARS, description="The conversation's new title, on one line.")

    @field_validator("title")
    @classmethod
    def _one_line(cls, title: str) -> str:
        title = " ".join(title.split())
        if not title:
            raise field_error("must not be blank")
        return printable(title)


class ConversationPage(BaseModel):
    """GET /api/conversations: one page of the caller's conversations, newest first."""

    conversations: list[ConversationSummary]
    next_cursor: str | None = Field(description="Pass it as cursor for the next page; null on the last page.")
