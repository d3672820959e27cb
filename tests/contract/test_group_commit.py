"""Group commit: concurrent writers share transactions, and each sees its own outcome."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import pytest
from sqlalchemy import Connection, func, insert, select

from mailgate.errors import CommitOutcomeUnknown, StoreError, StoreUnavailable
from mailgate.store import Database
from mailgate.store.group_commit import GroupCommit
from mailgate.store.schema import attempts, events
from tests.builders import NOW

P = ParamSpec("P")
R = TypeVar("R")


async def test_concurrent_submits_share_transactions_and_all_commit(database: Database) -> None:
    batches: list[int] = []

    def write(conn: Connection, items: Sequence[str]) -> list[str]:
        batches.append(len(items))
        rows = [{"message_id": i, "kind": "t", "payload": {}, "created_at": NOW} for i in items]
        conn.execute(insert(events), rows)
        return [f"done {i}" for i in items]

    writer = GroupCommit(database, write, max_batch=16)
    results = await asyncio.gather(*(writer.submit(f"m{i}") for i in range(50)))
    assert results == [f"done m{i}" for i in range(50)]  # each writer gets its own result
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(events))).scalar() == 50
    assert sum(batches) == 50 and max(batches) <= 16
    assert len(batches) < 50  # grouped, not one transaction each


async def test_a_failed_transaction_fails_only_its_own_writers(database: Database) -> None:
    def write(conn: Connection, items: Sequence[str]) -> list[None]:
        if "bad" in items:
            raise ValueError("boom")
        rows = [{"message_id": i, "kind": "t", "payload": {}, "created_at": NOW} for i in items]
        conn.execute(insert(events), rows)
        return [None] * len(items)

    writer = GroupCommit(database, write, max_batch=1)
    results = await asyncio.gather(
        writer.submit("ok1"), writer.submit("bad"), writer.submit("ok2"), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    async with database.read() as conn:
        ids = (await conn.execute(select(events.c.message_id))).scalars().all()
    assert sorted(ids) == ["ok1", "ok2"]
    with pytest.raises(ValueError, match="boom"):
        await writer.submit("bad")


async def test_one_poisoned_item_fails_alone_and_the_rest_commit_once(
    database: Database,
) -> None:
    """Issue 5, item 10: a failed batch is written again item by item, so only the
    item that fails alone sees the exception, and nothing is committed twice."""
    batches: list[list[str]] = []

    def write(conn: Connection, items: Sequence[str]) -> list[str]:
        batches.append(list(items))
        rows = [{"message_id": i, "kind": "t", "payload": {}, "created_at": NOW} for i in items]
        conn.execute(insert(events), rows)  # written, then rolled back with the batch
        if "poison" in items:
            raise ValueError("unrecordable")
        return [f"done {i}" for i in items]

    writer = GroupCommit(database, write, max_batch=64)
    names = [f"m{i}" for i in range(20)]
    names[9] = "poison"
    results = await asyncio.gather(*(writer.submit(n) for n in names), return_exceptions=True)
    assert isinstance(results[9], ValueError)
    assert [r for i, r in enumerate(results) if i != 9] == [
        f"done {n}" for n in names if n != "poison"
    ]
    assert len(batches[0]) == 20  # they did share a transaction first
    async with database.read() as conn:
        ids = (await conn.execute(select(events.c.message_id))).scalars().all()
    assert sorted(ids) == sorted(n for n in names if n != "poison")  # each exactly once


class _CountingDatabase(Database):
    transactions = 0

    async def transaction(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        self.transactions += 1
        return await super().transaction(fn, *args, **kwargs)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unavailable_database_fails_the_batch_without_a_retry_per_item() -> None:
    """Retrying alone is for a poisoned item; a database that is down fails the rest
    at once instead of making every writer wait for its own failed connection."""

    def write(conn: Connection, items: Sequence[str]) -> list[None]:
        return [None] * len(items)

    db = _CountingDatabase(f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres")
    try:
        writer = GroupCommit(db, write)
        results = await asyncio.gather(
            *(writer.submit(f"m{i}") for i in range(10)), return_exceptions=True
        )
    finally:
        await db.aclose()
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert db.transactions == 2  # the batch, then the first item alone


async def test_a_failed_commit_is_not_retried_item_by_item(tmp_path: Path) -> None:
    """When COMMIT itself fails, the outcome is unknown (the server may have committed
    before the connection broke): writing items again could store them twice. SQLite's
    deferred foreign keys make a real COMMIT fail after every statement succeeded."""
    writes: list[list[str]] = []

    def write(conn: Connection, items: Sequence[str]) -> list[None]:
        writes.append(list(items))
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        conn.execute(insert(attempts), [_orphan_attempt(i) for i in items])
        return [None] * len(items)

    results = await _three_at_once(f"sqlite:///{tmp_path / 'store.sqlite3'}", write)
    assert all(isinstance(r, StoreError) for r in results), results
    assert writes == [["m0", "m1", "m2"]]  # once, together; never again alone


def _orphan_attempt(message_id: str) -> dict[str, object]:
    return {
        "message_id": message_id,  # no such message: the deferred foreign key fails at COMMIT
        "at": NOW,
        "transport": "t",
        "text": "",
        "duration_ms": 0,
        "recipients": {},
    }


async def test_a_cancelled_writer_cancels_nobody_else_s_commit(database: Database) -> None:
    started = asyncio.Event()

    def write(conn: Connection, items: Sequence[str]) -> list[str]:
        rows = [{"message_id": i, "kind": "t", "payload": {}, "created_at": NOW} for i in items]
        conn.execute(insert(events), rows)
        return list(items)

    writer = GroupCommit(database, write, max_batch=16)

    async def first() -> str:
        started.set()
        return await writer.submit("cancelled")

    cancelled = asyncio.create_task(first())
    others = [asyncio.create_task(writer.submit(f"m{i}")) for i in range(5)]
    await started.wait()
    cancelled.cancel()
    assert await asyncio.gather(*others) == [f"m{i}" for i in range(5)]
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    async with database.read() as conn:
        ids = set((await conn.execute(select(events.c.message_id))).scalars())
    assert {f"m{i}" for i in range(5)} <= ids  # the cancelled one may or may not be there


async def test_an_unavailable_store_at_commit_is_an_unknown_outcome(tmp_path: Path) -> None:
    """A store found unavailable once the statements ran (here the SQLite file moved
    away under the open connection: the commit went to a file no restart will open)
    gives every writer :class:`CommitOutcomeUnknown`, so the dispatcher, which writes an
    outcome again when the store was unavailable, does not write this one twice."""
    path = tmp_path / "store.sqlite3"
    writes: list[list[str]] = []

    def write(conn: Connection, items: Sequence[str]) -> list[None]:
        writes.append(list(items))
        conn.execute(insert(events), [_event(i) for i in items])
        path.rename(tmp_path / "moved.sqlite3")
        return [None] * len(items)

    results = await _three_at_once(f"sqlite:///{path}", write)
    assert all(isinstance(r, CommitOutcomeUnknown) for r in results), results
    assert writes == [["m0", "m1", "m2"]]


def _event(message_id: str) -> dict[str, object]:
    return {"message_id": message_id, "kind": "t", "payload": {}, "created_at": NOW}


async def _three_at_once(
    url: str, write: Callable[[Connection, Sequence[str]], list[None]]
) -> list[object]:
    """Three items submitted at once to a group commit of ``write`` on a new store: what
    each submitter got (a result or the exception)."""
    db = Database(url)
    try:
        await db.migrate()
        writer = GroupCommit(db, write)
        return await asyncio.gather(
            *(writer.submit(f"m{i}") for i in range(3)), return_exceptions=True
        )
    finally:
        await db.aclose()
