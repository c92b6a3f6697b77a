"""Conversation models: the configured model each conversation runs on, so it continues on it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Conversations from before keep None: they continue on whichever model is the default.
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("model", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as table:
        table.drop_column("model")
