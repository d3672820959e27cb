"""SMTP submission: its users, and messages kept as the client sent them.

``smtp_users`` holds who may submit mail over SMTP (password as a scrypt hash, the
senders it may use, the account it sends through, its tenant). ``messages.raw`` keeps
a submitted message's bytes, sent as they are; ``messages.return_path`` its MAIL FROM.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("raw", sa.LargeBinary))
        batch.add_column(sa.Column("return_path", sa.Text))
    op.create_table(
        "smtp_users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("username", sa.String(255), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("senders", sa.JSON, nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_smtp_users_tenant", "smtp_users", ["tenant", "username"])


def downgrade() -> None:
    op.drop_index("ix_smtp_users_tenant", "smtp_users")
    op.drop_table("smtp_users")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("return_path")
        batch.drop_column("raw")
