"""The database's tables (conversations, messages, responses, people, shares) and who may use a conversation."""

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


# People (PALAVER_AUTH): an account signs in with a password (password_hash), or through an identity provider or a
# trusted proxy (identity: "oidc:<issuer>|<subject>" or "header:<value>"). role: admin or member; state: pending
# (waiting for an admin's approval), active or disabled.
people = Table(
    "people",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("login", String(320), nullable=False, unique=True),  # an email or a user name, lowercased
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("password_hash", String(200), nullable=True),
    Column("identity", String(400), nullable=True, unique=True),
    Column("role", String(16), nullable=False, server_default="member"),
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("failed_sign_ins", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
)

# A signed-in browser: the cookie holds a random token, the database only its SHA-256, so a read of the database
# signs nobody in. Signing out everywhere deletes a person's rows.
person_sessions = Table(
    "person_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("person_id", String(32), ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("user_agent", String(200), nullable=False, server_default=""),
    Index("ix_person_sessions_person", "person_id"),
)

# A person's API keys: random secrets shown once, stored as their SHA-256 (they carry 256 bits: no stretching needed).
person_keys = Table(
    "person_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("person_id", String(32), ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # the secret's first characters, to tell keys apart in a list
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_person_keys_person", "person_id"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(32), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("person_id", String(32), ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
)

# Limits set by an admin for a person ("person:<id>") or a group ("group:<id>"); None: no limit of that kind.
# models: the configured models' names allowed, comma-separated; None: every model.
quotas = Table(
    "quotas",
    metadata,
    Column("subject", String(64), primary_key=True),
    Column("tokens_per_day", Integer, nullable=True),
    Column("tokens_per_month", Integer, nullable=True),
    Column("requests_per_minute", Integer, nullable=True),
    Column("models", Text, nullable=True),
)

# Requests and tokens (prompt and completion) per person, UTC day (YYYY-MM-DD) and model.
usage = Table(
    "usage",
    metadata,
    Column("person_id", String(32), ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("model", String(100), primary_key=True),
    Column("requests", Integer, nullable=False, server_default="0"),
    Column("tokens", Integer, nullable=False, server_default="0"),
)

# A read-only snapshot of a conversation as it was when shared: the link's token is random, the database holds its
# SHA-256. Deleting the conversation deletes its shares.
shares = Table(
    "shares",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("conversation_id", String(64), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("title", String(200), nullable=False, server_default=""),
    Column("model", String(100), nullable=True),
    Column("snapshot", Text, nullable=False),  # the messages, as JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_shares_conversation", "conversation_id"),
)


def visible_to(owner: str | None) -> ColumnElement[bool]:
    """Select the conversations owner may use: only its own; a caller with no owner, only the unowned.

    A caller that is someone (a browser, a key) never reaches an unowned conversation, so a link to one can
    never make a visitor's messages land where a stranger reads them (docs/security.md).
    """
    return conversations.c.owner == owner if owner else conversations.c.owner.is_(None)
