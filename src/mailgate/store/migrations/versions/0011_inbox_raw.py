"""A captured message's bytes in a table of their own (``inbox_raw``).

In tempfile mode a big message is copied into the store a block at a time with SQLite's
incremental blob I/O, into a zeroblob of its size. SQLite leaves a zeroblob unwritten
only in a record's last column; ``inbox.raw`` was not, so SQLite made the message's
size in zeros in memory, twice (a 100 MiB message: 201 MiB at once). ``inbox_raw.raw``
is its row's last column. Deleting a captured message deletes its bytes (ON DELETE
CASCADE; SQLite's connections turn foreign keys on).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_raw",
        sa.Column(
            "id", sa.String(36), sa.ForeignKey("inbox.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("raw", sa.LargeBinary, nullable=False),
    )
    op.execute("INSERT INTO inbox_raw (id, raw) SELECT id, raw FROM inbox")
    # ALTER TABLE … DROP COLUMN on both engines (SQLite ≥ 3.35): not batch mode, whose
    # copy-and-drop of ``inbox`` would cascade to the bytes just copied
    op.execute("ALTER TABLE inbox DROP COLUMN raw")


def downgrade() -> None:
    op.add_column("inbox", sa.Column("raw", sa.LargeBinary, nullable=False, server_default=""))
    op.execute("UPDATE inbox SET raw = (SELECT raw FROM inbox_raw WHERE inbox_raw.id = inbox.id)")
    op.drop_table("inbox_raw")
