"""Outbox consumers may take only the events of messages from one source.

``outbox_consumers.source_prefix``: the Firestore write-back takes only the events of
messages whose source starts with ``firestore:``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_consumers") as batch:
        batch.add_column(sa.Column("source_prefix", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("outbox_consumers") as batch:
        batch.drop_column("source_prefix")
