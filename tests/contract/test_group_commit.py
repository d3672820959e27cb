"""Group commit: concurrent writers share transactions, and each sees its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailgate.store import Database
from mailgate.store.group_commit import GroupCommit
from mailgate.store.schema import events
from tests.builders import NOW


async def test_concurrent_submits_share_transactions_and_all_commit(database: Database) -> None:
    batches: list[int] = []

    async def write(conn: AsyncConnection, items: Sequence[str]) -> list[str]:
        batches.append(len(items))
        rows = [{"message_id": i, "kind": "t", "payload": {}, "created_at": NOW} for i in items]
        await conn.execute(insert(events), rows)
        return [f"done {i}" for i in items]

    writer = GroupCommit(database, write, max_batch=16)
    results = await asyncio.gather(*(writer.submit(f"m{i}") for i in range(50)))
    assert results == [f"done m{i}" for i in range(50)]  # each writer gets its own result
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(events))).scalar() == 50
    assert sum(batches) == 50 and max(batches) <= 16
    assert len(batches) < 50  # grouped, not one transaction each


async def test_a_failed_transaction_fails_only_its_own_writers(database: Database) -> None:
    async def write(conn: AsyncConnection, items: Sequence[str]) -> list[None]:
        if "bad" in items:
            raise ValueError("boom")
        rows = [{"message_id": i, "kind": "t", "payload": {}, "created_at": NOW} for i in items]
        await conn.execute(insert(events), rows)
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
