"""Client pools: the client (API key or address) that started each conversation, whose share of storage it uses.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("client", sa.String(100), nullable=True))
    # Conversations from before pools were counted: each owner's are its pool, the unowned share one.
    op.execute("UPDATE conversations SET client = owner")
    op.create_index("ix_conversations_client_updated", "conversations", ["client", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_client_updated", "conversations")
    with op.batch_alter_table("conversations") as table:
        table.drop_column("client")
