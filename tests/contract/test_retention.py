"""Retention (issue 7), on both engines: finished mail and delivered events go after the
cut-off; anything a consumer still has pending, and anything unfinished, stays."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Table, func, select

from mailgate.model import Attempt, State
from mailgate.policy import Decision
from mailgate.store import Database, QueueStore
from mailgate.store.outbox import OutboxStore
from mailgate.store.retention import purge
from mailgate.store.schema import attempts, events, messages
from tests.builders import NOW, make_message

WEEK = timedelta(days=7)


async def _sent(queue: QueueStore, at: timedelta) -> str:
    when = NOW - at
    message = make_message(created_at=when)
    await queue.enqueue([message], when)
    [job] = await queue.lease("w", when, 1, 60, budget=lambda t, a: None)
    attempt = Attempt(when, "smtp", 250, None, "ok", 1, {}, None)
    assert await queue.record(job, "w", attempt, Decision(State.SENT, (), 1, None))
    return message.id


async def _count(database: Database, table: Table, **where: str) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    async with database.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_finished_old_mail_goes_and_everything_else_stays(database: Database) -> None:
    queue, outbox = QueueStore(database), OutboxStore(database)
    old = await _sent(queue, WEEK + timedelta(hours=1))
    recent = await _sent(queue, timedelta(days=6))
    await outbox.register("hooks", NOW - WEEK * 3)
    pending = await _sent(queue, WEEK + timedelta(hours=2))  # its events not delivered yet
    delivered = await _sent(queue, WEEK + timedelta(hours=3))
    waiting = make_message(created_at=NOW - WEEK * 2)  # never sent: unfinished stays
    await queue.enqueue([waiting], NOW - WEEK * 2)
    for _ in range(2):  # one message's events are handed out one at a time, in order
        claimed = await outbox.claim("hooks", NOW, 100, 60)
        await outbox.ack("hooks", [e.id for e in claimed if e.message_id == delivered], NOW)

    purged = await purge(database, NOW - WEEK, batch=2)  # small batches: several rounds
    assert purged.messages == 2  # old (no consumer then) and delivered
    left = {m: await _count(database, messages, id=m) for m in (old, recent, pending, delivered)}
    assert left == {old: 0, recent: 1, pending: 1, delivered: 0}
    assert await _count(database, messages, id=waiting.id) == 1
    assert await _count(database, attempts, message_id=old) == 0  # cascaded
    assert await _count(database, events, message_id=old) == 0
    assert await _count(database, events, message_id=delivered) == 0
    assert await _count(database, events, message_id=pending) == 2  # queued, sent
    assert await _count(database, events, message_id=recent) == 2
    assert await outbox.backlog("hooks") == 3  # nothing pending was lost (waiting's too)

    again = await purge(database, NOW - WEEK)
    assert (again.messages, again.events) == (0, 0)
