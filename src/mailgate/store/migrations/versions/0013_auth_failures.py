"""Failed SMTP AUTH attempts are counted in the store, shared by every process.

``auth_failures`` holds one row per failed AUTH (the client's address, when): the
submission server's limit per address (``smtp.auth_max_failures`` within
``smtp.auth_failure_window``) was kept in each process's memory, so N ``serve``
processes behind one load balancer allowed N times the guesses. Rows past the window
are deleted as new ones are written.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("failed_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_auth_failures_client", "auth_failures", ["client", "failed_at"])
    op.create_index("ix_auth_failures_failed_at", "auth_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_auth_failures_failed_at", "auth_failures")
    op.drop_index("ix_auth_failures_client", "auth_failures")
    op.drop_table("auth_failures")
