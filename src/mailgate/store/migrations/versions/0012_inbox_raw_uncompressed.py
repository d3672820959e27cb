"""A captured message's bytes are kept uncompressed on PostgreSQL.

A download of a big message reads its bytes a block at a time with ``substring``. A
compressed value is decompressed from its start up to the block for each block, so
reading one of 68 MiB decompressed about 2.3 GB; stored ``EXTERNAL`` (out of line, not
compressed) each block reads only its own pages. Nor does the server spend CPU
compressing what is mostly base64 of compressed files. Rows written before keep their
storage until rewritten. SQLite has no such setting: nothing to do there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE inbox_raw ALTER COLUMN raw SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE inbox_raw ALTER COLUMN raw SET STORAGE EXTENDED")
