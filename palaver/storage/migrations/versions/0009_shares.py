"""Shares: read-only snapshots of a conversation, each behind an unguessable link until revoked.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "conversation_id", sa.String(64), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("model", sa.String(100), nullable=True),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_shares_conversation", "shares", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_shares_conversation", "shares")
    op.drop_table("shares")
