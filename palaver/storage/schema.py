"""The database's tables, conversations and their messages, and stored responses; and who may use a conversation."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=True),
    # The client that started it (an API key or an address): the retention sweep bounds storage per client.
    Column("client", String(100), nullable=True),
    Column("title", String(200), nullable=False, default=""),
    Column("preset", String(100), nullable=True),
    Column("model", String(100), nullable=True),  # the configured model's name it runs on; None: the default
    Column("turns", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The process running this conversation's turn holds a lease it renews; a dead process's lease runs out.
    Column("lease_token", String(32), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Index("ix_conversations_owner_updated", "owner", "updated_at"),
    Index("ix_conversations_updated", "updated_at"),
    Index("ix_conversations_client_updated", "client", "updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(64), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("finish_reason", String(16), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=True),  # how long the reply took, from the turn's start to its end
    Column("reasoning", Text, nullable=False, server_default=""),  # a thinking model's reasoning, apart from content
    UniqueConstraint("conversation_id", "position", name="uq_messages_conversation_position"),
)

# Responses made through /v1/responses with store: each whole, with the conversation a later one continues.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=True),
    Column("client", String(100), nullable=True),  # the client that made it: the sweep bounds storage per client
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),  # the response object, as JSON
    Column("input_items", Text, nullable=False),  # the request's input items, as JSON
    Column("conversation", Text, nullable=False),  # the messages a response that continues it reads, as JSON
    Index("ix_responses_created", "created_at"),
    Index("ix_responses_client_created", "client", "created_at"),
)


def visible_to(owner: str | None) -> ColumnElement[bool]:
    """Select the conversations owner may use: only its own; a caller with no owner, only the unowned.

    A caller that is someone (a browser, a key) never reaches an unowned conversation, so a link to one can
    never make a visitor's messages land where a stranger reads them (docs/security.md).
    """
    return conversations.c.owner == owner if owner else conversations.c.owner.is_(None)
