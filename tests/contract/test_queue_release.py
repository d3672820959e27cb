"""Release and renew: the queue's side of waiting and of long sends, on both engines.

Waiting for an account or a rate limit is not trying (issue 6): a released message
keeps its attempt count, gets no attempt row, shows why it waits, and comes back at
the time given. A renewed lease keeps another dispatcher off a message still being sent.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from mailgate.model import Attempt, FailureClass, Outcome, RecipientResult, State
from mailgate.policy import Decision
from mailgate.store import Database, Job, QueueStore
from mailgate.store.schema import events
from tests.builders import NOW, make_message

LATER = NOW + timedelta(seconds=30)


async def _leased(queue: QueueStore, owner: str = "w1") -> Job:
    await queue.enqueue([make_message()], NOW)
    [job] = await queue.lease(owner, NOW, 1, 60)
    return job


async def _kinds(database: Database, message_id: str) -> list[str]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(events.c.kind).where(events.c.message_id == message_id).order_by(events.c.id)
        )
        return [str(k) for k in rows.scalars()]


async def test_a_released_message_waits_until_the_time_without_an_attempt(
    database: Database,
) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    assert await queue.release(job, "w1", LATER, "account 'x' is disabled", now=NOW)
    record = await queue.get(job.message.id, "default")
    assert record.state is State.QUEUED  # never tried: still queued
    assert record.next_attempt_at == LATER and record.attempts == ()
    assert record.wait_reason == "account 'x' is disabled"
    assert await _kinds(database, job.message.id) == ["message.queued", "message.waiting"]
    assert await queue.lease("w2", LATER - timedelta(seconds=1), 1, 60) == []
    [again] = await queue.lease("w2", LATER, 1, 60)
    assert again.attempt_count == 0 and again.pending == job.pending


async def test_a_tried_message_is_released_as_deferred_with_its_count(database: Database) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    busy = Attempt(NOW, "smtp", 451, "4.3.0", "busy", 5, {}, FailureClass.OTHER)
    await queue.record(job, "w1", busy, Decision(State.DEFERRED, job.pending, 0, NOW))
    [job] = await queue.lease("w1", NOW, 1, 60)
    assert await queue.release(job, "w1", LATER, "rate limit of account 'a'", now=NOW)
    record = await queue.get(job.message.id, "default")
    assert record.state is State.DEFERRED and len(record.attempts) == 1
    [again] = await queue.lease("w1", LATER, 1, 60)
    assert again.attempt_count == 1


async def test_only_the_lease_owner_can_release(database: Database) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    assert not await queue.release(job, "intruder", LATER, "no", now=NOW)
    record = await queue.get(job.message.id, "default")
    assert record.state is State.SENDING and record.wait_reason is None
    assert await _kinds(database, job.message.id) == ["message.queued"]


async def test_an_attempt_clears_the_wait_reason_and_stores_its_class(database: Database) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    await queue.release(job, "w1", NOW, "account 'x' is disabled", now=NOW)
    [job] = await queue.lease("w1", NOW, 1, 60)
    refused = RecipientResult(Outcome.FAILED, 550, "5.1.1 no such user")
    attempt = Attempt(
        NOW,
        "smtp://relay:25",
        550,
        "5.1.1",
        "5.1.1 no such user",
        12,
        {"a@example.com": refused},
        FailureClass.INVALID_RECIPIENT,
        counted=True,
        remote_id="r-1",
        account="x",
    )
    await queue.record(job, "w1", attempt, Decision(State.FAILED, job.pending, 0, None))
    record = await queue.get(job.message.id, "default")
    assert record.wait_reason is None and record.attempts == (attempt,)


async def test_an_uncounted_attempt_keeps_the_count_and_shows_why_it_waits(
    database: Database,
) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    login = Attempt(NOW, "smtp", 535, "5.7.8", "bad login", 3, {}, FailureClass.AUTH, False)
    waiting = Decision(
        State.DEFERRED, job.pending, 0, LATER, counted=False, wait_reason="account: bad login"
    )
    await queue.record(job, "w1", login, waiting)
    record = await queue.get(job.message.id, "default")
    assert record.wait_reason == "account: bad login" and not record.attempts[0].counted
    [again] = await queue.lease("w1", LATER, 1, 60)
    assert again.attempt_count == 0


async def test_expiry_shows_its_own_last_error(database: Database) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    busy = Attempt(NOW, "smtp", 451, "4.3.0", "4.3.0 busy", 5, {}, FailureClass.OTHER)
    last = "expired after 10 attempts: 4.3.0 busy"
    gave_up = Decision(State.FAILED, job.pending, 0, None, reason="expired", last_error=last)
    await queue.record(job, "w1", busy, gave_up)
    record = await queue.get(job.message.id, "default")
    assert record.state is State.FAILED and record.last_error == last


async def test_renew_keeps_other_dispatchers_off_a_long_send(database: Database) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)  # leased until NOW + 60 s
    assert await queue.renew(job, "w1", 60, now=NOW + timedelta(seconds=30))  # → NOW + 90 s
    assert await queue.lease("w2", NOW + timedelta(seconds=61), 1, 60) == []
    [stolen] = await queue.lease("w2", NOW + timedelta(seconds=91), 1, 60)
    assert stolen.message.id == job.message.id


async def test_renew_fails_once_the_lease_is_lost(database: Database) -> None:
    queue = QueueStore(database)
    job = await _leased(queue)
    assert not await queue.renew(job, "intruder", 60, now=NOW)
    await queue.lease("w2", NOW + timedelta(seconds=61), 1, 60)  # w1's lease expired
    assert not await queue.renew(job, "w1", 60, now=NOW + timedelta(seconds=62))


async def test_waking_an_account_makes_its_waiting_messages_due(database: Database) -> None:
    queue = QueueStore(database)
    await queue.enqueue([make_message(account="x"), make_message(account="y")], NOW)
    jobs = await queue.lease("w1", NOW, 2, 60)
    far = NOW + timedelta(hours=1)
    for job in jobs:
        await queue.release(job, "w1", far, f"account {job.message.account!r} is disabled", now=NOW)
    assert await queue.wake_waiting("default", "x", NOW) == 1
    [due] = await queue.lease("w1", NOW, 2, 60)
    assert due.message.account == "x"
