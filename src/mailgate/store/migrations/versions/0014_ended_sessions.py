"""Admin UI sessions ended by a logout are kept until they would have expired.

A UI session is a signed cookie, valid for 12 hours from the login; ``POST /ui/logout``
deleted the browser's cookie, but a copy of it (from another tab's devtools, a proxy's
log, a stolen laptop's profile) kept opening the UI until it expired. ``ended_sessions``
holds the id of each session logged out, with its expiry, and every process on the store
refuses it from then on. Rows past their expiry go as new ones are written.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ended_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_ended_sessions_expires_at", "ended_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ended_sessions_expires_at", "ended_sessions")
    op.drop_table("ended_sessions")
