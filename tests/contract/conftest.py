"""The store contract runs against every engine: a SQLite file and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mailgate.store import Database
from mailgate.store.schema import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def database(store_url: str) -> AsyncIterator[Database]:
    db = Database(store_url)
    await _reset(db)
    await db.migrate()
    yield db
    await db.aclose()


async def _reset(db: Database) -> None:
    """PostgreSQL is shared by the session: start every test from an empty schema."""
    if db.is_sqlite:
        return
    async with db.write() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
