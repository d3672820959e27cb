"""The inbox's in-process pub/sub (inbox/events.py) and the wait criteria (inbox/wait.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from mailgate.errors import InvalidInput
from mailgate.ids import new_id
from mailgate.inbox.events import EventKind, InboxEvent, InboxEvents
from mailgate.inbox.wait import Since, WaitFor, id_floor
from mailgate.store import CapturedRecord


def record(tenant: str = "default", **fields: object) -> CapturedRecord:
    values: dict[str, object] = {
        "id": new_id(),
        "tenant": tenant,
        "source": "smtp",
        "received_at": datetime.now(UTC),
        "remote_addr": None,
        "helo": None,
        "mail_from": "app@example.com",
        "rcpt_to": ["ana@example.net"],
        "auth": None,
        "subject": "Your sign-in code",
        "from_header": "App <app@example.com>",
        "to_header": "Ana <ana@example.net>, bo@example.org",
        "headers": {},
        "text": None,
        "html": None,
        "attachments": [],
        "size": 1,
    }
    values.update(fields)
    return CapturedRecord(**values)  # type: ignore[arg-type]


def new(r: CapturedRecord) -> InboxEvent:
    return InboxEvent(EventKind.NEW, r.tenant, r, r.id)


async def test_a_reader_hears_its_tenant_only_and_a_store_wide_clear() -> None:
    hub = InboxEvents()
    with hub.subscribe("acme") as acme, hub.subscribe("default") as default:
        mine, theirs = record("acme"), record("default")
        hub.publish(new(theirs))
        hub.publish(new(mine))
        hub.publish(InboxEvent(EventKind.CLEAR, None, count=2))
        assert await acme.next(0) == new(mine)
        assert (await acme.next(0) or new(mine)).kind is EventKind.CLEAR
        assert await acme.next(0) is None
        assert await default.next(0) == new(theirs)
        assert hub.count() == 2
    assert hub.count() == 0


async def test_next_waits_for_an_event_or_the_timeout() -> None:
    hub = InboxEvents()
    with hub.subscribe("default") as sub:
        started = time.monotonic()
        assert await sub.next(0.1) is None
        assert time.monotonic() - started >= 0.1
        r = record()
        asyncio.get_running_loop().call_later(0.05, hub.publish, new(r))
        assert await sub.next(5) == new(r)


async def test_a_reader_that_falls_behind_loses_its_backlog_and_hears_lost_once() -> None:
    hub = InboxEvents(queue_limit=3)
    with hub.subscribe("default") as slow:
        records = [record() for _ in range(5)]
        for r in records:
            hub.publish(new(r))
        # three queued, the fourth found it full: dropped all; the fifth is queued again
        assert (await slow.next(0) or new(records[0])).kind is EventKind.LOST
        assert await slow.next(0) == new(records[4])
        assert await slow.next(0) is None


async def test_closing_the_hub_ends_every_wait_at_once() -> None:
    hub = InboxEvents()
    sub = hub.subscribe("default")
    waiting = asyncio.create_task(sub.next(None))
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.wait_for(waiting, 1) is None
    assert sub.closed and hub.count() == 0
    late = hub.subscribe("default")
    assert late.closed and await late.next(None) is None


def test_since_an_id_or_a_time() -> None:
    before = record()
    after = record()
    assert Since.parse(before.id.upper()).admits(after)
    assert not Since.parse(after.id).admits(before)
    moment = datetime.now(UTC)
    assert id_floor(moment.timestamp()) < new_id()
    assert Since.parse("2000-01-01T00:00:00").after_time == datetime(2000, 1, 1, tzinfo=UTC)
    assert not Since.parse(moment.isoformat()).admits(before)
    with pytest.raises(InvalidInput):
        Since.parse("not-a-time")


@pytest.mark.parametrize(
    ("want", "matches"),
    [
        (WaitFor(to="ANA@example.net"), True),
        (WaitFor(to="bo@example.org"), True),  # the To header, not the envelope
        (WaitFor(to="na@example.net"), False),  # a whole address when it has an @
        (WaitFor(to="@example.org"), True),
        (WaitFor(sender="app@example.com", subject="SIGN-IN"), True),
        (WaitFor(sender="example.com"), True),
        (WaitFor(subject="password"), False),
        (WaitFor(box="other"), False),
        (WaitFor(since=Since.parse("2999-01-01T00:00:00Z")), False),  # as a capture arrives
        (WaitFor(since=Since.parse("2000-01-01")), True),
    ],
)
def test_wait_criteria(want: WaitFor, matches: bool) -> None:
    assert want.matches(record()) is matches
