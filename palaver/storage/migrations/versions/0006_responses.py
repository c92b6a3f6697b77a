"""Responses: what /v1/responses stores, so that a later response continues one by its id.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("client", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("input_items", sa.Text, nullable=False),
        sa.Column("conversation", sa.Text, nullable=False),
    )
    op.create_index("ix_responses_created", "responses", ["created_at"])
    op.create_index("ix_responses_client_created", "responses", ["client", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_client_created", "responses")
    op.drop_index("ix_responses_created", "responses")
    op.drop_table("responses")
