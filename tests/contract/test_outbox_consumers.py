"""Outbox consumers (issue 7), on both engines: each registered consumer gets every event
written after it registered, once acknowledged never again; a claim holds events for a
lease and a dead claimer's events come back; failures retry at the time given and are
dead-lettered after ``dead_after``; processes sharing a consumer never claim one event
twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mailgate.store import Database, QueueStore
from mailgate.store.outbox import OutboxStore
from tests.builders import NOW, make_message

T1 = NOW + timedelta(seconds=1)


async def _queue(database: Database, n: int) -> list[str]:
    messages = [make_message() for _ in range(n)]
    await QueueStore(database).enqueue(messages, NOW)
    return [m.id for m in messages]


async def test_consumers_get_events_from_registration_on(database: Database) -> None:
    outbox = OutboxStore(database)
    await _queue(database, 1)  # before anyone listens: nobody's
    await outbox.register("hooks", NOW)
    await outbox.register("hooks", NOW)  # idempotent
    [first] = await _queue(database, 1)
    await outbox.register("sync", NOW)
    [second] = await _queue(database, 1)

    hooks = await outbox.claim("hooks", T1, 10, 60)
    assert [(e.kind, e.message_id) for e in hooks] == [
        ("message.queued", first), ("message.queued", second),
    ]  # fmt: skip
    assert [e.message_id for e in await outbox.claim("sync", T1, 10, 60)] == [second]
    assert hooks[0].tenant == "default" and hooks[0].source == "rest"
    assert hooks[0].payload == {"state": "queued"} and hooks[0].id < hooks[1].id


async def test_claimed_events_come_back_after_the_lease_unless_acknowledged(
    database: Database,
) -> None:
    outbox = OutboxStore(database)
    await outbox.register("hooks", NOW)
    await _queue(database, 3)
    claimed = await outbox.claim("hooks", T1, 2, 30)
    assert len(claimed) == 2
    [third] = await outbox.claim("hooks", T1, 10, 30)  # the other two are held
    assert third.id > claimed[-1].id
    await outbox.ack("hooks", [claimed[0].id], T1)
    assert await outbox.backlog("hooks") == 2
    later = T1 + timedelta(seconds=31)  # the claimer died: its lease ran out
    again = await outbox.claim("hooks", later, 10, 30)
    assert [e.id for e in again] == [claimed[1].id, third.id]  # never the acknowledged one
    await outbox.ack("hooks", [e.id for e in again], later)
    assert await outbox.claim("hooks", later + timedelta(hours=1), 10, 30) == []
    assert await outbox.backlog("hooks") == 0


async def test_failures_retry_at_their_time_then_go_to_the_dead_letters(
    database: Database,
) -> None:
    outbox = OutboxStore(database, dead_after=3600)
    await outbox.register("hooks", NOW)
    await _queue(database, 1)
    [event] = await outbox.claim("hooks", T1, 10, 30)
    retry_at = T1 + timedelta(minutes=5)
    assert not await outbox.fail("hooks", event.id, "HTTP 503", T1, retry_at)
    assert await outbox.claim("hooks", retry_at - timedelta(seconds=1), 10, 30) == []
    [again] = await outbox.claim("hooks", retry_at, 10, 30)
    assert (again.attempts, again.last_error) == (1, "HTTP 503")

    late = NOW + timedelta(hours=1, seconds=1)  # the event is older than dead_after
    assert await outbox.fail("hooks", event.id, "HTTP 500", late, late + timedelta(hours=1))
    assert await outbox.claim("hooks", late + timedelta(days=1), 10, 30) == []
    [dead] = await outbox.dead("hooks")
    assert (dead.id, dead.attempts, dead.last_error) == (event.id, 2, "HTTP 500")
    assert await outbox.backlog("hooks") == 0


async def test_two_processes_sharing_a_consumer_never_claim_one_event_twice(
    database: Database, store_url: str
) -> None:
    await OutboxStore(database).register("hooks", NOW)
    await _queue(database, 40)
    other = Database(store_url)  # a second process: its own engine and connections
    try:
        a, b = OutboxStore(database), OutboxStore(other)
        claims = await asyncio.gather(*(s.claim("hooks", T1, 3, 60) for s in [a, b] * 10))
    finally:
        await other.aclose()
    ids = [e.id for claim in claims for e in claim]
    assert len(ids) == 40 and len(set(ids)) == 40
