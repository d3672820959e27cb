"""The inbox keeps at most ``max_messages`` per tenant, newest first, and forgets what is
older than its age limit (issue 9), each named inbox by its own limits when it has them
(issue 10), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from mailgate.ids import new_id
from mailgate.store import CapturedRecord, Database, InboxStore
from mailgate.store.inbox import Pruned
from tests.builders import NOW

BASE = CapturedRecord(
    id="", tenant="default", source="smtp", received_at=NOW, remote_addr=None, helo=None,
    mail_from="a@example.com", rcpt_to=["b@example.com"], auth=None, subject="",
    from_header="", to_header="", headers={}, text="t", html=None, attachments=[], size=1,
)  # fmt: skip


def _record(
    subject: str, *, tenant: str = "default", box: str = "default", age: timedelta = timedelta()
) -> CapturedRecord:
    return dataclasses.replace(
        BASE, id=new_id(), tenant=tenant, box=box, subject=subject, received_at=NOW - age
    )


async def test_past_max_messages_the_oldest_go_per_tenant(database: Database) -> None:
    store = InboxStore(database, max_messages=3)
    for i in range(5):
        await store.add(_record(f"a{i}"), b"x")
    await store.add(_record("other", tenant="t2"), b"x")
    # a burst committed together is bounded too
    await asyncio.gather(*(store.add(_record(f"b{i}"), b"x") for i in range(4)))
    kept = [r.subject for r in (await store.list("default", limit=10))[0]]
    assert len(kept) == 3 and set(kept) <= {"b0", "b1", "b2", "b3"}
    assert [r.subject for r in (await store.list("t2"))[0]] == ["other"]  # its own bound


async def test_what_is_older_than_the_cutoff_is_deleted(database: Database) -> None:
    store = InboxStore(database)
    await store.add(_record("old", age=timedelta(days=8)), b"x")
    await store.add(_record("new", age=timedelta(days=1)), b"x")
    assert await store.prune_older(NOW - timedelta(days=7)) == (Pruned("default", "default", 1),)
    assert [r.subject for r in (await store.list("default"))[0]] == ["new"]
    assert await store.prune_older(NOW - timedelta(days=7)) == ()


async def test_a_named_inbox_has_its_own_max_messages(database: Database) -> None:
    store = InboxStore(database, max_messages=3, box_max_messages={"ci": 1, "all": 0})
    assert [await store.add(_record(f"ci{i}", box="ci"), b"x") for i in range(3)] == [0, 1, 1]
    for i in range(4):
        await store.add(_record(f"d{i}"), b"x")
        await store.add(_record(f"all{i}", box="all"), b"x")  # 0: no limit
    assert await _subjects(store, "ci") == ["ci2"]
    assert await _subjects(store, "default") == ["d1", "d2", "d3"]
    assert len(await _subjects(store, "all")) == 4


async def test_each_inbox_ages_out_at_its_own_cutoff(database: Database) -> None:
    store = InboxStore(database)
    two_days, eight_days = timedelta(days=2), timedelta(days=8)
    await store.add(_record("short-old", box="short", age=two_days), b"x")
    await store.add(_record("short-new", box="short"), b"x")
    await store.add(_record("default-2d", age=two_days), b"x")
    await store.add(_record("default-8d", age=eight_days), b"x")
    await store.add(_record("t2-8d", tenant="t2", age=eight_days), b"x")
    await store.add(_record("kept-8d", box="kept", age=eight_days), b"x")
    pruned = await store.prune_older(
        NOW - timedelta(days=7), box_cutoffs={"short": NOW - timedelta(days=1), "kept": None}
    )
    assert sorted(pruned, key=lambda p: (p.tenant, p.box)) == [
        Pruned("default", "default", 1),
        Pruned("default", "short", 1),
        Pruned("t2", "default", 1),
    ]
    assert await _subjects(store, "short") == ["short-new"]
    assert await _subjects(store, "default") == ["default-2d"]
    assert await _subjects(store, "kept") == ["kept-8d"]
    assert await store.prune_older(None, box_cutoffs={"kept": None}) == ()


async def _subjects(store: InboxStore, box: str) -> list[str]:
    return sorted(r.subject for r in (await store.list("default", box=box, limit=50))[0])


async def test_two_processes_committing_to_one_inbox_keep_max_messages(
    postgres_url: str,
) -> None:
    """PostgreSQL, two connections as two processes would: each commits a new message to
    a full inbox, the second pruning while the first has not committed. Under READ
    COMMITTED each counted the other's new row out, and the inbox held one too many.
    (SQLite has one writer at a time: there the second cannot begin.)"""
    from sqlalchemy import func, select

    from mailgate.store.schema import inbox
    from tests.contract.conftest import _reset

    db = Database(postgres_url)
    await _reset(db)
    await db.migrate()
    try:
        store = InboxStore(db, max_messages=2)
        for subject in ("old-1", "old-2"):
            await store.add(_record(subject), b"x")
        assert db.engine is not None
        async with db.engine.connect() as first, db.engine.connect() as second:
            await first.begin()
            await first.run_sync(store._insert_many, [(_record("new-1"), b"x")])
            await second.begin()
            pruning = asyncio.create_task(
                second.run_sync(store._insert_many, [(_record("new-2"), b"x")])
            )
            await asyncio.sleep(0.5)  # the second prunes now, or waits for the first
            await first.commit()
            await pruning
            await second.commit()
        async with db.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(inbox))).scalar_one()
        assert count == 2
    finally:
        await db.aclose()
