"""The dispatcher's rules for one attempt (build, send, record), on a real SQLite store.

The transports here are small real classes that misbehave on purpose, the way a
buggy transport would; the store and the MIME builder are the program's own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, ItemsView, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.clock import SystemClock
from mailgate.deliver import Dispatcher, Outgoing
from mailgate.deliver.router import FixedRoute
from mailgate.deliver.transport import INLINE_BUILD_MAX
from mailgate.model import Message, Outcome, RecipientResult, SendResult, State
from mailgate.policy import RetryPolicy
from mailgate.settings import DeliverySettings
from mailgate.store import Database, Job, MessageRecord, QueueStore
from mailgate.store import database as database_module
from tests.builders import make_message

OWNER = "test-dispatcher"


class Accepting:
    """Accepts everything, and remembers what it was given."""

    name = "accepting"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, outgoing: Outgoing) -> SendResult:
        self.sent.append(await outgoing.mime())
        ok = RecipientResult(Outcome.SENT, 250, "ok")
        recipients = outgoing.envelope.recipients
        return SendResult(Outcome.SENT, 250, "2.0.0", "ok", {r: ok for r in recipients})

    async def aclose(self) -> None:
        return None


class Raising(Accepting):
    """A transport with a bug: it raises instead of returning a result."""

    name = "raising"

    async def send(self, outgoing: Outgoing) -> SendResult:
        raise RuntimeError("transport bug")


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[QueueStore]:
    db = Database(f"sqlite:///{tmp_path / 'queue.sqlite3'}")
    await db.migrate()
    yield QueueStore(db)
    await db.aclose()


def dispatcher(queue: QueueStore, transport: Accepting) -> Dispatcher:
    return Dispatcher(
        queue,
        FixedRoute(transport),
        retry=RetryPolicy(
            initial_delay=60, multiplier=2, max_delay=600, max_age=86400, jitter=0, max_attempts=10
        ),
        settings=DeliverySettings(),
        clock=SystemClock(),
        owner=OWNER,
    )


async def leased(queue: QueueStore, message: Message) -> Job:
    now = datetime.now(UTC)
    await queue.enqueue([message], now)
    [job] = await queue.lease(OWNER, now, 1, 60)
    return job


async def state_of(queue: QueueStore, message: Message) -> MessageRecord:
    return await queue.get(message.id, message.tenant)


async def test_a_transport_that_raises_is_never_recorded_as_sent(queue: QueueStore) -> None:
    """Issue 5: recording a raising transport as SENT passed the whole suite."""
    message = make_message(created_at=datetime.now(UTC))
    await dispatcher(queue, Raising()).deliver(await leased(queue, message))
    record = await state_of(queue, message)
    assert record.state is State.DEFERRED and record.next_attempt_at is not None
    [attempt] = record.attempts
    assert attempt.text == "internal error: RuntimeError('transport bug')"
    assert attempt.recipients["a@example.com"].status is Outcome.DEFERRED


async def test_a_message_that_cannot_be_built_fails_for_good_with_the_reason(
    queue: QueueStore,
) -> None:
    """Any exception while building, not only ValueError: it would fail on every retry.

    (The ``email`` package raises AttributeError for some malformed addresses.)
    """

    class Unbuildable(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            raise AttributeError("'InvalidHeaderDefect' object has no attribute 'all_defects'")

        def __len__(self) -> int:
            return 1

    message = make_message(created_at=datetime.now(UTC))
    job = await leased(queue, message)
    transport = Accepting()
    await dispatcher(queue, transport).deliver(
        replace(job, message=replace(job.message, headers=Unbuildable()))
    )
    record = await state_of(queue, message)
    assert record.state is State.FAILED and transport.sent == []
    assert record.last_error == (
        "could not build the message: AttributeError:"
        " 'InvalidHeaderDefect' object has no attribute 'all_defects'"
    )


async def test_a_large_message_is_built_off_the_event_loop(queue: QueueStore) -> None:
    """A message whose build takes long (a large one) must not stall other sessions.

    While the message is being built, its headers wait for a callback that only a
    free event loop can run. Built on the loop, the callback could not run until
    the build ended: the wait would time out, and the loop would have been stalled.
    """
    loop = asyncio.get_running_loop()
    served = threading.Event()
    seen: dict[str, bool] = {}

    class WaitingForTheLoop(Mapping[str, str]):
        def __init__(self, values: dict[str, str]) -> None:
            self.given = values

        def __getitem__(self, key: str) -> str:
            return self.given[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.given)

        def __len__(self) -> int:
            return len(self.given)

        def items(self) -> ItemsView[str, str]:
            loop.call_soon_threadsafe(served.set)
            seen["loop served during the build"] = served.wait(timeout=5)
            return self.given.items()

    message = make_message(created_at=datetime.now(UTC), text="x" * INLINE_BUILD_MAX)
    job = await leased(queue, message)
    headers = WaitingForTheLoop({"X-Order": "42"})
    transport = Accepting()
    await dispatcher(queue, transport).deliver(
        replace(job, message=replace(job.message, headers=headers))
    )
    assert seen == {"loop served during the build": True}
    assert (await state_of(queue, message)).state is State.SENT
    assert b"X-Order: 42" in transport.sent[0]


class Busy(Accepting):
    """Every recipient refused for now: 451."""

    name = "busy"

    async def send(self, outgoing: Outgoing) -> SendResult:
        return SendResult(Outcome.DEFERRED, 451, "4.3.0", "4.3.0 try later")


async def test_backoff_grows_with_the_attempts_already_made(queue: QueueStore) -> None:
    """The fourth try waits initial × multiplier³ (60 s × 8), not the first delay again."""
    message = make_message(created_at=datetime.now(UTC))
    job = replace(await leased(queue, message), attempt_count=3)
    await dispatcher(queue, Busy()).deliver(job)
    record = await state_of(queue, message)
    [attempt] = record.attempts
    assert record.state is State.DEFERRED and record.next_attempt_at is not None
    assert record.next_attempt_at - attempt.at == timedelta(seconds=480)


class LockingTheStore(Accepting):
    """Accepts the message, and while it does another program takes the SQLite file's
    write lock (an open ``sqlite3`` shell transaction, a backup) for ``hold`` seconds."""

    def __init__(self, path: Path, hold: float) -> None:
        super().__init__()
        self.path, self.hold = path, hold

    async def send(self, outgoing: Outgoing) -> SendResult:
        other = sqlite3.connect(self.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(self.hold, other.close)  # rolls back
        return await super().send(outgoing)


async def test_an_outcome_the_store_could_not_take_is_recorded_once_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store unavailable when a sent message's outcome was recorded (PostgreSQL
    restarting, the SQLite file locked) left the message ``sending`` until its lease
    expired, and then it was sent again: every message in flight during a blip of the
    database went out twice. Nothing of the outcome was written, so it is tried again."""
    monkeypatch.setattr(database_module, "BUSY_TIMEOUT_MS", 100)  # "locked" comes quickly
    path = tmp_path / "queue.sqlite3"
    db = Database(f"sqlite:///{path}")
    try:
        await db.migrate()
        queue = QueueStore(db)
        message = make_message(created_at=datetime.now(UTC))
        transport = LockingTheStore(path, hold=1.0)
        await dispatcher(queue, transport).deliver(await leased(queue, message))
        record = await state_of(queue, message)
    finally:
        await db.aclose()
    assert len(transport.sent) == 1
    assert record.state is State.SENT, record
    assert [a.code for a in record.attempts] == [250]
