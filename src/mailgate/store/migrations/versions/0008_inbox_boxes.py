"""Captured mail is sorted into inboxes, read or unread, and tagged (issue 10).

``inbox`` gains ``box`` (the inbox name, ``inbox.sort_by``), ``read``, ``tags`` (a JSON
list) and ``message_id`` (the Message-ID header, for ``message-id:`` searches), and an
index listing one inbox newest first. Mail captured before is in the ``default``
inbox, unread and untagged; its Message-ID is copied from its stored headers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("box", sa.String(64), nullable=False, server_default="default"))
        batch.add_column(sa.Column("read", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("message_id", sa.Text))
    op.create_index("ix_inbox_tenant_box_id", "inbox", ["tenant", "box", "id"])
    _copy_message_ids(op.get_bind())


def _copy_message_ids(conn: sa.Connection) -> None:
    """Fill ``message_id`` from each kept message's headers, a batch at a time."""
    inbox = sa.table(
        "inbox", sa.column("id", sa.String), sa.column("headers", sa.JSON),
        sa.column("message_id", sa.Text),
    )  # fmt: skip
    last = ""
    while rows := conn.execute(
        sa.select(inbox.c.id, inbox.c.headers)
        .where(inbox.c.id > last)
        .order_by(inbox.c.id)
        .limit(500)
    ).all():
        for capture_id, headers in rows:
            if found := _message_id(headers or {}):
                conn.execute(
                    sa.update(inbox).where(inbox.c.id == capture_id).values(message_id=found)
                )
        last = rows[-1][0]


def _message_id(headers: dict[str, object]) -> str | None:
    """The first Message-ID header's value without its angle brackets (as capture does)."""
    for name, value in headers.items():
        if name.lower() == "message-id":
            first = value[0] if isinstance(value, list) and value else value
            return str(first).strip().strip("<>").strip() or None
    return None


def downgrade() -> None:
    op.drop_index("ix_inbox_tenant_box_id", "inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("message_id")
        batch.drop_column("tags")
        batch.drop_column("read")
        batch.drop_column("box")
