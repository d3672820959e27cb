"""The queue and inbox store contract, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from mailgate.errors import Conflict, NotFound
from mailgate.inbox.search import parse_query
from mailgate.model import Attachment, Attempt, Outcome, Priority, RecipientResult, State
from mailgate.policy import Decision
from mailgate.store import CapturedRecord, Database, InboxStore, QueueStore
from mailgate.store.schema import metadata
from tests.builders import NOW, make_message


async def test_migrations_build_exactly_the_declared_schema(database: Database) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with database.read() as conn:
        assert await conn.run_sync(diff) == []


async def test_the_waiting_index_is_partial_on_both_engines(database: Database) -> None:
    """Leasing walks ``ix_messages_waiting``, which holds the queued and deferred rows
    only. The declared schema names its condition for SQLite alone (see schema.py), so
    the migrated database is asked."""
    query = (
        "SELECT sql FROM sqlite_master WHERE name = 'ix_messages_waiting'"
        if database.is_sqlite
        else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_waiting'"
    )
    async with database.read() as conn:
        ddl = (await conn.execute(text(query))).scalar_one()
    assert "WHERE" in ddl.upper() and "queued" in ddl and "deferred" in ddl


async def test_migrate_twice_is_harmless(database: Database) -> None:
    await database.migrate()


async def test_enqueue_and_get_round_trip(database: Database) -> None:
    queue = QueueStore(database)
    m = make_message(
        cc=("c@example.com",),
        bcc=("Hidden <h@example.com>",),
        headers={"X-A": "1"},
        attachments=(Attachment("a.bin", "application/octet-stream", bytes(range(256))),),
        metadata={"order": 42},
    )
    [result] = await queue.enqueue([m], NOW)
    assert result.id == m.id and not result.duplicate
    record = await queue.get(m.id, "default")
    assert record.state is State.QUEUED and record.metadata == {"order": 42}
    assert record.created_at == NOW and record.next_attempt_at == NOW
    [job] = await queue.lease("w1", NOW, 10, 60)
    assert job.message == m  # every field survives the store, attachment bytes included
    assert job.pending == ("a@example.com", "c@example.com", "h@example.com")


async def test_idempotency_key_is_unique_per_tenant(database: Database) -> None:
    queue = QueueStore(database)
    first = make_message(key="order-1")
    again = make_message(key="order-1", subject="changed")
    other_tenant = make_message(key="order-1", tenant="t2")
    results = await queue.enqueue([first, again, other_tenant], NOW)
    assert [(r.id, r.duplicate) for r in results] == [
        (first.id, False),
        (first.id, True),
        (other_tenant.id, False),
    ]
    assert (await queue.get(first.id, "default")).subject == "hello"
    with pytest.raises(NotFound):
        await queue.get(other_tenant.id, "default")  # tenants see only their own


async def test_lease_takes_due_messages_by_priority_and_only_once(database: Database) -> None:
    queue = QueueStore(database)
    low = make_message(priority=Priority.LOW)
    high = make_message(priority=Priority.HIGH)
    later = make_message(send_at=NOW + timedelta(hours=1))
    await queue.enqueue([low, high, later], NOW)
    jobs = await queue.lease("w1", NOW, 10, lease_for=7200)
    assert [j.message.id for j in jobs] == [high.id, low.id]
    assert await queue.lease("w2", NOW, 10, 60) == []
    assert await queue.next_due() == NOW + timedelta(hours=1)
    assert [j.message.id for j in await queue.lease("w2", NOW + timedelta(hours=1), 10, 60)] == [
        later.id
    ]


async def test_expired_lease_returns_the_message(database: Database) -> None:
    queue = QueueStore(database)
    m = make_message()
    await queue.enqueue([m], NOW)
    [job] = await queue.lease("dead-worker", NOW, 1, lease_for=30)
    assert await queue.lease("w2", NOW + timedelta(seconds=29), 1, 30) == []
    [again] = await queue.lease("w2", NOW + timedelta(seconds=31), 1, 30)
    assert again.message.id == m.id
    # the dead worker's late result must not overwrite the new owner's lease
    assert not await queue.record(job, "dead-worker", _attempt(250), _sent())


async def test_concurrent_leases_never_share_a_message(store_url: str, database: Database) -> None:
    """Two independent dispatchers (own engines, as two processes would have)."""
    await QueueStore(database).enqueue([make_message() for _ in range(40)], NOW)
    other = Database(store_url)
    try:
        queues = [QueueStore(database), QueueStore(other)]
        batches = await asyncio.gather(
            *(queues[i % 2].lease(f"w{i}", NOW, 3, 60) for i in range(20))
        )
    finally:
        await other.aclose()
    ids = [job.message.id for batch in batches for job in batch]
    assert len(ids) == 40 and len(set(ids)) == 40


async def test_record_attempt_and_decision(database: Database) -> None:
    queue = QueueStore(database)
    m = make_message(to=("a@example.com", "b@example.com"))
    await queue.enqueue([m], NOW)
    [job] = await queue.lease("w1", NOW, 1, 60)
    retry_at = NOW + timedelta(minutes=30)
    decision = Decision(State.DEFERRED, ("b@example.com",), 1, retry_at)
    assert await queue.record(job, "w1", _attempt(451), decision)
    record = await queue.get(m.id, "default")
    assert record.state is State.DEFERRED and record.next_attempt_at == retry_at
    assert record.last_error == "reply 451"
    [attempt] = record.attempts
    assert attempt.code == 451 and attempt.recipients["a@example.com"].status is Outcome.SENT
    [job2] = await queue.lease("w1", retry_at, 1, 60)
    assert job2.pending == ("b@example.com",) and job2.delivered == 1 and job2.attempt_count == 1


async def test_retry_and_cancel_follow_the_state_machine(database: Database) -> None:
    queue = QueueStore(database)
    m = make_message()
    await queue.enqueue([m], NOW)
    [job] = await queue.lease("w1", NOW, 1, 60)
    with pytest.raises(Conflict):
        await queue.cancel(m.id, "default", NOW)  # being sent right now
    await queue.record(
        job, "w1", _attempt(550), Decision(State.FAILED, ("a@example.com",), 0, None)
    )
    await queue.retry(m.id, "default", NOW)
    record = await queue.get(m.id, "default")
    assert record.state is State.QUEUED and record.next_attempt_at == NOW
    [job] = await queue.lease("w1", NOW, 1, 60)
    assert job.pending == ("a@example.com",)
    await queue.record(job, "w1", _attempt(250), _sent())
    with pytest.raises(Conflict, match="is sent"):
        await queue.cancel(m.id, "default", NOW)
    with pytest.raises(Conflict):
        await queue.retry(m.id, "default", NOW)
    with pytest.raises(NotFound):
        await queue.retry("nope", "default", NOW)


async def test_list_pages_newest_first_with_state_filter(database: Database) -> None:
    queue = QueueStore(database)
    messages = [make_message() for _ in range(5)]
    for m in messages:  # ids are time-ordered; enqueue one by one
        await queue.enqueue([m], NOW)
    page1, cursor = await queue.list("default", limit=3)
    page2, end = await queue.list("default", limit=3, cursor=cursor)
    assert [r.id for r in page1 + page2] == [m.id for m in reversed(messages)]
    assert end is None
    assert (await queue.list("default", state=State.SENT))[0] == []
    assert await queue.count_by_state() == {"queued": 5}


async def test_inbox_store(database: Database) -> None:
    inbox = InboxStore(database)
    records = [
        CapturedRecord(
            id=f"0190000{i}",
            tenant="default",
            source="smtp",
            received_at=NOW,
            remote_addr="127.0.0.1:1",
            helo="h",
            mail_from="a@example.com",
            rcpt_to=["b@example.com"],
            auth=None,
            subject=subject,
            from_header="A <a@example.com>",
            to_header="b@example.com",
            headers={"Subject": subject},
            text="t",
            html=None,
            attachments=[],
            size=3,
        )
        for i, subject in enumerate(["Welcome aboard", "Your 50% discount", "Reset password"])
    ]
    for r in records:
        await inbox.add(r, f"Subject: {r.subject}\r\n\r\nt".encode())
    page, cursor = await inbox.list("default", limit=2)
    assert [r.id for r in page] == ["01900002", "01900001"]
    assert await inbox.list("default", limit=2, cursor=cursor) == ([records[0]], None)
    assert await inbox.list("default", limit=3) == (records[::-1], None)
    assert [r.subject for r in (await inbox.list("default", query=parse_query("50%")))[0]] == [
        "Your 50% discount"
    ]
    assert [r.subject for r in (await inbox.list("default", query=parse_query("PASSWORD")))[0]] == [
        "Reset password"
    ]
    assert await inbox.list("other") == ([], None)
    assert await inbox.raw("01900000", "default") == b"Subject: Welcome aboard\r\n\r\nt"
    await inbox.delete("01900000", "default")
    with pytest.raises(NotFound):
        await inbox.get("01900000", "default")
    assert await inbox.clear("default") == 2


def _attempt(code: int) -> Attempt:
    status = Outcome.SENT if code < 400 else Outcome.DEFERRED if code < 500 else Outcome.FAILED
    return Attempt(
        NOW,
        "smtp:test",
        code,
        None,
        f"reply {code}",
        5,
        {
            "a@example.com": RecipientResult(Outcome.SENT, 250, "ok"),
            "b@example.com": RecipientResult(status, code, f"reply {code}"),
        },
    )


def _sent() -> Decision:
    return Decision(State.SENT, (), 1, None)
