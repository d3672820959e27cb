"""Outbox consumers that filter, pause and replay, and the per-message order they keep
(issue 7, webhooks), on both engines."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mailgate.model import Attempt, State
from mailgate.policy import Decision
from mailgate.store import Database, QueueStore
from mailgate.store.outbox import OutboxStore
from mailgate.store.retention import purge
from tests.builders import NOW, make_message

T1 = NOW + timedelta(seconds=1)


async def _sent(queue: QueueStore, tenant: str = "default") -> str:
    """A message queued then sent: two events, ``message.queued`` and ``message.sent``."""
    message = make_message(tenant=tenant)
    await queue.enqueue([message], NOW)
    [job] = await queue.lease("w", NOW, 1, 60, budget=lambda t, a: None)
    attempt = Attempt(NOW, "smtp", 250, None, "ok", 1, {}, None)
    assert await queue.record(job, "w", attempt, Decision(State.SENT, (), 1, None))
    return message.id


async def test_a_consumer_gets_only_its_tenant_and_kinds(database: Database) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database)
    await outbox.register("acme-sent", NOW, tenant="acme", kinds=["message.sent"])
    await outbox.register("everything", NOW)
    acme = await _sent(queue, "acme")
    await _sent(queue, "other")

    [event] = await outbox.claim("acme-sent", T1, 10, 60)
    assert (event.kind, event.message_id, event.tenant) == ("message.sent", acme, "acme")
    assert await outbox.backlog("everything") == 4

    await outbox.register("acme-sent", NOW, tenant="acme", kinds=["message.queued"])  # changed
    other = await _sent(queue, "acme")
    [queued] = await outbox.claim("acme-sent", T1, 10, 60)
    assert (queued.kind, queued.message_id) == ("message.queued", other)


async def test_one_message_s_events_are_handed_out_in_order(database: Database) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database, dead_after=60)
    await outbox.register("hooks", NOW)
    first, second = await _sent(queue), await _sent(queue)

    claimed = await outbox.claim("hooks", T1, 10, 30)
    assert [(e.kind, e.message_id) for e in claimed] == [
        ("message.queued", first), ("message.queued", second),
    ]  # fmt: skip
    # while a message's earlier event is in flight or failing, its later one waits
    assert await outbox.claim("hooks", T1, 10, 30) == []
    await outbox.ack("hooks", [claimed[0].id], T1)
    retry_at = T1 + timedelta(seconds=10)
    await outbox.fail("hooks", claimed[1].id, "HTTP 500", T1, retry_at)
    [sent] = await outbox.claim("hooks", T1, 10, 30)
    assert (sent.kind, sent.message_id) == ("message.sent", first)
    await outbox.ack("hooks", [sent.id], T1)
    [again] = await outbox.claim("hooks", retry_at, 10, 30)
    assert (again.kind, again.message_id) == ("message.queued", second)
    # a dead-lettered event no longer holds the next one back
    late = NOW + timedelta(minutes=2)
    assert await outbox.fail("hooks", again.id, "HTTP 500", late, late)
    [last] = await outbox.claim("hooks", late, 10, 30)
    assert (last.kind, last.message_id) == ("message.sent", second)


async def test_two_processes_never_hand_out_a_message_s_events_out_of_order(
    database: Database, store_url: str
) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database)
    await outbox.register("hooks", NOW)
    for _ in range(10):
        await _sent(queue)
    other = Database(store_url)
    try:
        stores = [outbox, OutboxStore(other)] * 5
        claims = await asyncio.gather(*(s.claim("hooks", T1, 100, 60) for s in stores))
    finally:
        await other.aclose()
    kinds = [e.kind for claim in claims for e in claim]
    assert sorted(kinds) == ["message.queued"] * 10  # no sent before its queued is done


async def test_a_paused_consumer_keeps_its_backlog_but_takes_nothing_new(
    database: Database,
) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database)
    await outbox.register("hooks", NOW)
    await _sent(queue)
    await outbox.set_active("hooks", False)
    await _sent(queue)
    assert await outbox.backlog("hooks") == 2
    # retention does not wait for a paused consumer
    purged = await purge(database, NOW + timedelta(days=1))
    assert (purged.messages, purged.events) == (2, 4)
    await outbox.set_active("hooks", True)
    await _sent(queue)
    assert await outbox.backlog("hooks") == 2


async def test_replay_delivers_an_acknowledged_event_again(database: Database) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database)
    await outbox.register("hooks", NOW)
    await _sent(queue)
    [queued] = await outbox.claim("hooks", T1, 10, 60)
    await outbox.ack("hooks", [queued.id], T1)
    assert await outbox.replay("hooks", queued.id, T1)
    [again] = await outbox.claim("hooks", T1, 10, 60)  # message.sent waits behind it
    assert (again.id, again.attempts) == (queued.id, 0)
    await outbox.ack("hooks", [again.id], T1)
    [sent] = await outbox.claim("hooks", T1, 10, 60)
    assert sent.kind == "message.sent"
    await outbox.register("late", NOW)  # registered after the event: replay still works
    assert await outbox.replay("late", queued.id, T1)
    assert [e.id for e in await outbox.claim("late", T1, 10, 60)] == [queued.id]
    assert not await outbox.replay("hooks", queued.id + 1000, T1)


async def test_a_consumer_may_take_only_one_source_s_messages(database: Database) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database)
    await outbox.register("write-back", NOW, source_prefix="firestore:")
    from_firestore = make_message(source="firestore:mail/doc-1")
    await queue.enqueue([make_message(), from_firestore, make_message(source="smtp")], NOW)
    [event] = await outbox.claim("write-back", T1, 10, 60)
    assert (event.message_id, event.source) == (from_firestore.id, "firestore:mail/doc-1")
