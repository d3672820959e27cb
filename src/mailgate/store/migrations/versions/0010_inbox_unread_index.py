"""Each inbox's total and unread counts from an index (issue 11).

The admin UI's inbox switcher and Mailpit's ``unread`` count every inbox's mail and
how much of it is unread. With ``read`` outside any index that read every row (190 ms
for 100,000 captured messages on SQLite); ``(tenant, box, read)`` answers it from the
index alone (about 25 ms).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inbox_tenant_box_read", "inbox", ["tenant", "box", "read"])


def downgrade() -> None:
    op.drop_index("ix_inbox_tenant_box_read", "inbox")
