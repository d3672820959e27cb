"""Settings changed at run time persist (issue 11).

``runtime_settings`` holds one row per setting changed from the admin UI or
``PATCH /api/v1/settings`` (its dotted name, its JSON value, when and by whom): each
process merges them over its configured defaults at start and picks up another
process's change within seconds.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from mailgate.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_settings",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runtime_settings")
