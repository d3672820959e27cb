"""Accounts, per-tenant API tokens, shared rate buckets; attempt classes and wait reasons.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("wait_reason", sa.Text))
    op.create_index(
        "ix_messages_account_due",
        "messages",
        ["tenant", "account", "priority", "next_attempt_at", "id"],
    )
    with op.batch_alter_table("attachments") as batch:
        batch.add_column(sa.Column("url", sa.Text))
        batch.add_column(sa.Column("path", sa.Text))
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("failure_class", sa.String(24)))
        batch.add_column(sa.Column("counted", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("remote_id", sa.Text))
        batch.add_column(sa.Column("account", sa.String(64)))
    op.create_table(
        "accounts",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("from_addrs", sa.JSON, nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("smtp_host", sa.Text),
        sa.Column("smtp_port", sa.Integer),
        sa.Column("smtp_security", sa.String(16), nullable=False),
        sa.Column("smtp_auth", sa.String(16), nullable=False),
        sa.Column("smtp_username", sa.Text),
        sa.Column("smtp_password_enc", sa.LargeBinary),
        sa.Column("smtp_options", sa.JSON, nullable=False),
        sa.Column("postmark_token_enc", sa.LargeBinary),
        sa.Column("is_outbound_enabled", sa.Boolean, nullable=False),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("imap", sa.JSON, nullable=False),
        sa.Column("imap_password_enc", sa.LargeBinary),
        sa.Column("dkim", sa.JSON),
        sa.Column("dkim_key_enc", sa.LargeBinary),
        sa.Column("connection_last_ok_at", UTCDateTime),
        sa.Column("connection_error", sa.Text),
        sa.Column("tested_at", UTCDateTime),
        sa.Column("settings_changed_at", UTCDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_used_at", UTCDateTime),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("api_tokens")
    op.drop_table("accounts")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("account")
        batch.drop_column("remote_id")
        batch.drop_column("counted")
        batch.drop_column("failure_class")
    with op.batch_alter_table("attachments") as batch:
        batch.drop_column("path")
        batch.drop_column("url")
    op.drop_index("ix_messages_account_due", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("wait_reason")
