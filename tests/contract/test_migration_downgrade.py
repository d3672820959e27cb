"""Each migration's ``downgrade()`` undoes its ``upgrade()`` on both engines, so an
operator can step back a release: down to nothing and up again builds the declared
schema, and 0011 takes a captured message's bytes back into ``inbox``."""

from __future__ import annotations

import dataclasses

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from mailgate.ids import new_id
from mailgate.store import Database, InboxStore
from mailgate.store.database import alembic_config
from mailgate.store.schema import metadata
from tests.contract.test_inbox_bounds import BASE


def _to(conn: Connection, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(cfg, revision)


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_down_to_nothing_and_up_again_builds_the_declared_schema(
    database: Database,
) -> None:
    async with database.write() as conn:
        await conn.run_sync(_to, "base", down=True)
        tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        assert set(tables) <= {"alembic_version"}
        await conn.run_sync(_to, "head")
        assert await conn.run_sync(_diff) == []


async def test_0011_down_and_up_keeps_a_captured_message_s_bytes(database: Database) -> None:
    store = InboxStore(database)
    record = dataclasses.replace(BASE, id=new_id(), subject="kept")
    raw = b"Subject: kept\r\n\r\n\x00\xff bytes\r\n"
    await store.add(record, raw)
    async with database.write() as conn:
        await conn.run_sync(_to, "0010", down=True)
        query = text("SELECT raw FROM inbox WHERE id = :id")
        assert (await conn.execute(query, {"id": record.id})).scalar_one() == raw
        await conn.run_sync(_to, "head")
    assert await store.raw(record.id, "default") == raw
