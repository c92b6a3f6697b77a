"""Reply reasoning: a thinking model's reasoning, kept apart from the reply's text.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Messages from before, and every message but a thinking model's reply, keep an empty reasoning.
    with op.batch_alter_table("messages") as table:
        table.add_column(sa.Column("reasoning", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("messages") as table:
        table.drop_column("reasoning")
