"""Fair leasing reads the backlog through a partial index of waiting messages only;
what finished when (activity figures, retention) has an index of its own.

``ix_messages_account_due`` held every message ever queued: a lease walked past an
account's sent and sending rows (their ``next_attempt_at`` is NULL or old, so they
sort first) before reaching its first waiting one, so leasing slowed down with every
message kept for the retention period. ``ix_messages_waiting`` holds only queued and
deferred rows: its size is the backlog.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WAITING = sa.text("state IN ('queued', 'deferred')")


def upgrade() -> None:
    op.drop_index("ix_messages_account_due", "messages")
    op.create_index(
        "ix_messages_waiting",
        "messages",
        ["tenant", "account", "priority", "next_attempt_at", "id"],
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    )
    op.create_index("ix_messages_state_updated", "messages", ["state", "updated_at", "tenant"])


def downgrade() -> None:
    op.drop_index("ix_messages_state_updated", "messages")
    op.drop_index("ix_messages_waiting", "messages")
    op.create_index(
        "ix_messages_account_due",
        "messages",
        ["tenant", "account", "priority", "next_attempt_at", "id"],
    )
