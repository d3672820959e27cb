"""What finished recently (``QueueStore.activity``, behind ``GET /api/v1/stats``), on
both engines: windows by the time each message reached its state, sent per minute,
each account's last error; other tenants' mail never counted."""

from __future__ import annotations

from datetime import timedelta

from mailgate.model import Attempt, FailureClass, State
from mailgate.policy import Decision
from mailgate.store import Database, QueueStore
from tests.builders import NOW, make_message


async def _settle(
    queue: QueueStore, *, at: timedelta, state: State, account: str = "default",
    tenant: str = "default", error: str | None = None,
) -> str:  # fmt: skip
    """A message of ``account`` that reached ``state`` at NOW - ``at``."""
    when = NOW - at
    message = make_message(account=account, tenant=tenant, created_at=when)
    await queue.enqueue([message], when)
    [job] = await queue.lease("w", when, 1, 60, budget=lambda t, a: None)
    failure = None if state is State.SENT else FailureClass.INVALID_RECIPIENT
    code = 250 if state is State.SENT else 550
    attempt = Attempt(when, "smtp", code, None, error or "ok", 3, {}, failure, account=account)
    next_at = when + timedelta(hours=1) if state is State.DEFERRED else None
    assert await queue.record(job, "w", attempt, Decision(state, (), 1, next_at))
    return message.id


async def test_windows_minutes_and_last_errors(database: Database) -> None:
    queue = QueueStore(database)
    for minutes in (0.5, 0.6, 10.2, 59.5):  # sent in the last hour: minutes ago
        await _settle(queue, at=timedelta(minutes=minutes), state=State.SENT)
    await _settle(queue, at=timedelta(hours=3), state=State.SENT)  # in the day only
    await _settle(queue, at=timedelta(hours=30), state=State.SENT)  # older than a day
    await _settle(queue, at=timedelta(minutes=5), state=State.FAILED, error="550 old")
    newest = await _settle(queue, at=timedelta(minutes=2), state=State.DEFERRED,
                           error="451 busy")  # fmt: skip
    await _settle(queue, at=timedelta(hours=2), state=State.FAILED, account="news",
                  error="550 5.1.1 no such user")  # fmt: skip
    await _settle(queue, at=timedelta(minutes=1), state=State.FAILED, tenant="acme")

    activity = await queue.activity("default", NOW)
    assert (activity.sent_hour, activity.failed_hour) == (4, 1)
    assert (activity.sent_day, activity.failed_day) == (5, 2)
    assert len(activity.per_minute) == 60 and sum(activity.per_minute) == 4
    # oldest first: 59.5 minutes ago is minute 0, half a minute ago is minute 59
    assert activity.per_minute[0] == 1 and activity.per_minute[59] == 2
    assert activity.per_minute[49] == 1
    default, news = activity.last_errors["default"], activity.last_errors["news"]
    assert (default.error, default.message_id, default.at) == (
        "451 busy",
        newest,
        NOW - timedelta(minutes=2),
    )
    assert news.error == "550 5.1.1 no such user"

    other = await queue.activity("acme", NOW)
    assert (other.sent_day, other.failed_day, other.failed_hour) == (0, 1, 1)
    assert set(other.last_errors) == {"default"}
