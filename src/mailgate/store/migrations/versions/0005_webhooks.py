"""Webhooks: endpoints per tenant, their attempts, and outbox consumers that filter.

``outbox_consumers`` gains a tenant and kinds filter and an ``active`` switch (a
disabled webhook's consumer gets no new deliveries); ``outbox_deliveries`` gains the
``ordering_key`` (the event's message) so a consumer receives one message's events in
order. ``webhooks`` holds the endpoints (secret encrypted), ``webhook_attempts`` every
POST and its answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("outbox_consumers") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64)))
        batch.add_column(sa.Column("kinds", sa.Text))
        batch.add_column(
            sa.Column("active", sa.Boolean, nullable=False, server_default=sa.text("true"))
        )
    with op.batch_alter_table("outbox_deliveries") as batch:
        batch.add_column(sa.Column("ordering_key", sa.String(36)))
    op.create_index(
        "ix_outbox_deliveries_order",
        "outbox_deliveries",
        ["consumer", "ordering_key", "event_id"],
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("kinds", sa.JSON),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("secret_enc", sa.LargeBinary, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_webhooks_tenant", "webhooks", ["tenant", "id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.String(36), nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("attempted_at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )
    op.create_index("ix_webhook_attempts_webhook", "webhook_attempts", ["webhook_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhooks")
    op.drop_index("ix_outbox_deliveries_order", "outbox_deliveries")
    with op.batch_alter_table("outbox_deliveries") as batch:
        batch.drop_column("ordering_key")
    with op.batch_alter_table("outbox_consumers") as batch:
        batch.drop_column("active")
        batch.drop_column("kinds")
        batch.drop_column("tenant")
