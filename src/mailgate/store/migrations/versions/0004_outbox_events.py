"""Outbox events name their tenant and the message's source; captured mail has events.

``events`` gains ``tenant``, ``source`` (``rest``, ``smtp``, ``firestore:<path>``) and
``inbox_id``, and ``message_id`` may be empty (an event of captured mail). ``messages``
keeps its ``source``. Existing events belong to the ``default`` tenant. Consumers of the
outbox are registered in ``outbox_consumers``; ``outbox_deliveries`` holds one row per
consumer and event until the consumer acknowledges it (or it is dead-lettered).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("source", sa.Text, nullable=False, server_default="rest"))
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("tenant", sa.String(64), nullable=False, server_default="default")
        )
        batch.add_column(sa.Column("inbox_id", sa.String(36)))
        batch.add_column(sa.Column("source", sa.Text))
        batch.alter_column("message_id", existing_type=sa.String(36), nullable=True)
    op.create_table(
        "outbox_consumers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "outbox_deliveries",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_outbox_deliveries_due",
        "outbox_deliveries",
        ["consumer", "state", "next_attempt_at", "event_id"],
    )


def downgrade() -> None:
    op.drop_table("outbox_deliveries")
    op.drop_table("outbox_consumers")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("message_id", existing_type=sa.String(36), nullable=False)
        batch.drop_column("source")
        batch.drop_column("inbox_id")
        batch.drop_column("tenant")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("source")
