"""Small transactions (``Database.small_transaction``): on SQLite written on the event loop
when the write lock is free, in the database thread when another process holds it; the
WAL is checkpointed in the thread. Same outcome as ``transaction`` on every engine."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, insert, select

from mailgate.store import Database
from mailgate.store import database as database_module
from mailgate.store.group_commit import GroupCommit
from mailgate.store.prepared import Prepared
from mailgate.store.schema import events
from tests.builders import NOW


def _rows(items: Sequence[str]) -> list[dict[str, object]]:
    return [{"message_id": i, "kind": "t", "payload": {"pad": "x" * 2000}, "created_at": NOW}
            for i in items]  # fmt: skip


async def _count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())


async def test_small_batches_commit_each_writer_s_own_outcome(database: Database) -> None:
    def write(conn: Connection, items: Sequence[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("boom")
        conn.execute(insert(events), _rows(items))
        return [f"done {i}" for i in items]

    writer = GroupCommit(database, write, max_batch=8, small=lambda items: True)
    names = [f"m{i}" for i in range(30)]
    results = await asyncio.gather(*(writer.submit(n) for n in [*names, "bad"]),
                                   return_exceptions=True)  # fmt: skip
    assert results[:30] == [f"done {n}" for n in names]
    assert isinstance(results[30], ValueError)  # the batch it shared was written again
    assert await _count(database) == 30


async def test_a_failed_small_transaction_leaves_nothing(database: Database) -> None:
    def write(conn: Connection) -> None:
        conn.execute(insert(events), _rows(["half"]))
        raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError):
        await database.small_transaction(write)
    assert await _count(database) == 0
    await database.small_transaction(lambda conn: conn.execute(insert(events), _rows(["x"])))
    assert await _count(database) == 1  # the connection went back to the pool usable


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    await db.migrate()
    yield db
    await db.aclose()


def _thread_name(conn: Connection, item: str) -> str:
    conn.execute(insert(events), _rows([item]))
    return threading.current_thread().name


async def test_on_the_loop_when_the_lock_is_free_in_the_thread_when_another_holds_it(
    sqlite_db: Database, tmp_path: Path
) -> None:
    assert (
        await sqlite_db.small_transaction(_thread_name, "free") == threading.current_thread().name
    )

    held, release = threading.Event(), threading.Event()

    def other_process() -> None:  # another writer of the same file: its own connection
        other = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(10)
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=other_process)
    holder.start()
    await asyncio.to_thread(held.wait, 10)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    writing = asyncio.create_task(sqlite_db.small_transaction(_thread_name, "locked"))
    await asyncio.sleep(0.3)
    assert not writing.done()  # it waits for the other writer...
    assert ticks >= 5  # ...without holding up the loop (a wait on the loop: no ticks)
    release.set()
    name = await writing
    ticker.cancel()
    holder.join()
    assert name.startswith("mailgate-sqlite")  # it went to the database thread
    assert await _count(sqlite_db) == 2


async def test_the_wal_written_on_the_loop_is_checkpointed_in_the_thread(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "CHECKPOINT_BYTES", 64 * 4096)
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as plain:  # start from a database file with everything in it
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.stat().st_size

    def write(conn: Connection, name: str) -> None:
        conn.execute(insert(events), _rows([name]))

    for i in range(80):  # 80 rows of 2 KB, a transaction each: past 64 rows' worth
        await sqlite_db.small_transaction(write, f"r{i}")
    for _ in range(500):  # the checkpoint runs in the database thread
        if path.stat().st_size > before + 60 * 2000:
            break
        await asyncio.sleep(0.01)
    # the rows reached the database file itself, not only its write-ahead log
    assert path.stat().st_size > before + 60 * 2000
    assert await _count(sqlite_db) == 80


async def test_statements_on_the_driver_alone_are_committed_too(database: Database) -> None:
    """Prepared statements run on sqlite3's cursor, not through SQLAlchemy: SQLAlchemy
    has no transaction to commit, the driver's is committed all the same."""
    prepared = Prepared(insert(events), list(_rows(["x"])[0]))

    def write(conn: Connection, name: str) -> None:
        prepared.run(conn, _rows([name]))

    await database.small_transaction(write, "driver only")
    await database.small_transaction(write, "and again")
    assert await _count(database) == 2  # read on another connection: committed
