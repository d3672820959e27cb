"""The inbox keeps at most ``max_messages`` per tenant, newest first, and forgets what is
older than its age limit (issue 9), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from mailgate.ids import new_id
from mailgate.store import CapturedRecord, Database, InboxStore
from tests.builders import NOW

BASE = CapturedRecord(
    id="", tenant="default", source="smtp", received_at=NOW, remote_addr=None, helo=None,
    mail_from="a@example.com", rcpt_to=["b@example.com"], auth=None, subject="",
    from_header="", to_header="", headers={}, text="t", html=None, attachments=[], size=1,
)  # fmt: skip


def _record(
    subject: str, *, tenant: str = "default", age: timedelta = timedelta()
) -> CapturedRecord:
    return dataclasses.replace(
        BASE, id=new_id(), tenant=tenant, subject=subject, received_at=NOW - age
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
    assert await store.prune_older(NOW - timedelta(days=7)) == 1
    assert [r.subject for r in (await store.list("default"))[0]] == ["new"]
