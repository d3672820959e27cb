"""SQLite's reads and writes through :mod:`mailgate.store.sqlite_threads`: statements run
in the database threads, rows come back already read, and neither a cancelled caller
nor more readers than connections leave a connection in two hands."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from mailgate.store import Database
from mailgate.store.database import READ_CONNECTIONS


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "threads.sqlite3"


@pytest.fixture
async def db(path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{path}")
    await database.migrate()
    async with database.write() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER)"))
        await conn.execute(text("INSERT INTO t VALUES (:n)"), [{"n": n} for n in range(2000)])
    yield database
    await database.aclose()


async def test_rows_are_read_in_the_database_thread_not_on_the_loop(db: Database) -> None:
    """SQLite steps a statement where its rows are fetched: every step is counted (a
    progress handler called each few VM instructions) with the thread that ran it."""
    steps: list[int] = []

    def step() -> int:
        steps.append(threading.get_ident())
        return 0  # go on

    def watch(conn: Connection, handler: Callable[[], int] | None) -> None:
        driver: Any = conn.connection.driver_connection
        driver.set_progress_handler(handler, 10)

    async with db.read() as conn:
        await conn.run_sync(watch, step)
        result = await conn.execute(text("SELECT n FROM t ORDER BY n"))
        loop_thread = threading.get_ident()
        before = len(steps)
        rows = result.scalars().all()
        assert len(steps) == before  # reading the rows ran no SQLite
        await conn.run_sync(watch, None)
    assert rows == list(range(2000))
    assert steps and loop_thread not in steps


async def test_more_readers_than_connections_all_finish(db: Database) -> None:
    """Each read block holds a connection across its awaits; the ones beyond the pool's
    room wait on the loop, never in a thread the holders need for their next statement."""

    async def reader(i: int) -> int:
        async with db.read() as conn:
            first = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
            await asyncio.sleep(0.01)
            second = (await conn.execute(text("SELECT :i"), {"i": i})).scalar_one()
            return int(first) + int(second)

    results = await asyncio.wait_for(
        asyncio.gather(*(reader(i) for i in range(READ_CONNECTIONS * 4))), timeout=20
    )
    assert results == [2000 + i for i in range(READ_CONNECTIONS * 4)]


async def test_a_cancelled_writer_rolls_back_and_frees_the_lock(db: Database) -> None:
    """Cancelled while its statement runs in the thread: the statement ends first, the
    transaction is rolled back, and the next writer gets the lock."""
    started = asyncio.Event()

    async def slow_writer() -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (-1)"))
            started.set()
            # a statement that runs for a while in the database thread
            await conn.execute(
                text(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                    " WHERE x < 3000000) SELECT count(*) FROM c"
                )
            )

    task = asyncio.create_task(slow_writer())
    await started.wait()
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.write() as conn:  # the lock and a connection are free again
        await conn.execute(text("INSERT INTO t VALUES (-2)"))
    async with db.read() as conn:
        kept = (await conn.execute(text("SELECT n FROM t WHERE n < 0"))).scalars().all()
    assert kept == [-2]  # the cancelled transaction's row was rolled back


async def test_a_read_sees_one_snapshot(db: Database) -> None:
    """A read block's statements share the snapshot of its first (a deferred BEGIN)."""
    async with db.read() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
        async with db.write() as writer:
            await writer.execute(text("INSERT INTO t VALUES (5000)"))
        again = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
    assert before == again == 2000
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2001


async def test_a_writer_cancelled_while_another_process_writes_leaves_no_transaction(
    db: Database, path: Path
) -> None:
    """Cancelled while its BEGIN IMMEDIATE waits for another process's write lock (in the
    database thread): when the BEGIN gets the lock after all, the transaction it opened is
    rolled back at once, not held by a forgotten connection until the garbage collector
    finds it, which would keep every later writer waiting (30 s of busy_timeout)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer

    async def writer() -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (-1)"))

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.3)  # its BEGIN is waiting in the thread
    task.cancel()
    await asyncio.sleep(0.1)
    other.execute("ROLLBACK")  # the BEGIN gets the lock now
    with pytest.raises(asyncio.CancelledError):
        await task
    other.execute("PRAGMA busy_timeout = 2000")
    other.execute("BEGIN IMMEDIATE")  # free again within 2 s, not after the GC
    other.execute("ROLLBACK")
    other.close()
    async with asyncio.timeout(5):
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (-2)"))
