"""Failed SMTP AUTH counted through the store (``auth_failures``), on SQLite and PostgreSQL:
the store's rows, and :class:`SharedAuthThrottle` on two engines as two ``serve``
processes would have them (the same file, or the same PostgreSQL database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from mailgate.errors import StoreUnavailable
from mailgate.ingest.auth_throttle import SharedAuthThrottle
from mailgate.store import Database
from mailgate.store.auth_failures import PRUNE_BATCH, AuthFailureStore
from tests.builders import NOW

WINDOW = 300.0
CLIENT = "192.0.2.7"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = NOW) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


@pytest.fixture
async def other(database: Database, store_url: str) -> AsyncIterator[Database]:
    """A second engine on the same store: another ``serve`` process's."""
    db = Database(store_url)
    yield db
    await db.aclose()


def _throttle(db: Database, clock: Clock, max_failures: int = 3) -> SharedAuthThrottle:
    return SharedAuthThrottle(AuthFailureStore(db), clock, max_failures, WINDOW)


async def test_a_failure_is_one_row_read_newest_first(database: Database) -> None:
    store, since = AuthFailureStore(database), NOW - timedelta(seconds=WINDOW)
    for i in range(3):
        await store.add(CLIENT, NOW + timedelta(seconds=i), since, 10)
    await store.add("198.51.100.1", NOW, since, 10)
    newest = await store.newest(CLIENT, since, 2)
    assert newest == [NOW + timedelta(seconds=2), NOW + timedelta(seconds=1)]
    assert await store.count() == 4


async def test_failures_past_the_window_are_deleted_as_new_ones_are_written(
    database: Database,
) -> None:
    store = AuthFailureStore(database)
    old = NOW - timedelta(seconds=2 * WINDOW)
    for i in range(PRUNE_BATCH + 5):  # more than one write prunes: it takes two
        await store.add(f"203.0.113.{i % 200}", old, old - timedelta(seconds=WINDOW), 1)
    since = NOW - timedelta(seconds=WINDOW)
    assert await store.add(CLIENT, NOW, since, 5) == [NOW]
    assert await store.count() == 1 + 5  # one batch went
    await store.add(CLIENT, NOW, since, 5)
    assert await store.count() == 2  # and the rest: only this window's are left


async def test_a_flood_of_addresses_in_one_window_keeps_the_table_bounded(
    database: Database,
) -> None:
    store = AuthFailureStore(database, max_rows=10)
    since = NOW - timedelta(seconds=WINDOW)
    for i in range(25):
        await store.add(f"2001:db8::{i:x}", NOW + timedelta(seconds=i), since, 1)
    assert await store.count() == 10
    assert await store.newest("2001:db8::18", since, 1) != []  # the newest are kept
    assert await store.newest("2001:db8::0", since, 1) == []


async def test_failures_in_one_process_block_the_address_in_another(
    database: Database, other: Database
) -> None:
    clock = Clock()
    here, there = _throttle(database, clock), _throttle(other, clock)
    await here.failed(CLIENT)
    since = NOW - timedelta(seconds=WINDOW)  # committed when failed() returns (before a 535)
    assert await AuthFailureStore(other).newest(CLIENT, since, 5) == [NOW]
    clock.at += timedelta(seconds=10)
    await there.failed(CLIENT)
    assert await here.admit(CLIENT) and await there.admit(CLIENT)  # 2 of 3: checked
    await here.done(CLIENT, failed=True)  # the third, here
    assert not await there.admit(CLIENT)  # there only counted one itself
    assert there.blocked(CLIENT)  # remembered: the next AUTH is refused without a query
    await there.done(CLIENT, failed=False)
    assert await there.admit("192.0.2.8")  # another address is not blocked
    await there.done("192.0.2.8", failed=False)
    # until the oldest failure in the window ages out, not before
    clock.at = NOW + timedelta(seconds=WINDOW - 1)
    assert there.blocked(CLIENT) and not await there.admit(CLIENT)
    clock.at = NOW + timedelta(seconds=WINDOW)
    assert not there.blocked(CLIENT)
    assert await there.admit(CLIENT)


async def test_checks_in_progress_still_count_in_the_process(
    database: Database, other: Database
) -> None:
    """The in-process rule stays: parallel checks here cannot pass the limit, with the
    store's failures (another process's) counted too."""
    clock = Clock()
    await _throttle(other, clock).failed(CLIENT)
    here = _throttle(database, clock)
    admits = [asyncio.ensure_future(here.admit(CLIENT)) for _ in range(5)]
    ended: set[asyncio.Future[bool]] = set()
    while len(ended) < 2:  # 1 failure + 2 in progress: the others wait
        more, _ = await asyncio.wait(set(admits) - ended, return_when=asyncio.FIRST_COMPLETED)
        ended |= more
    for _ in ended:
        await here.done(CLIENT, failed=True)
    async with asyncio.timeout(30):  # a third admitted would wait for a done() forever
        assert sorted(await asyncio.gather(*admits)) == [False] * 3 + [True] * 2


class GatedReads(AuthFailureStore):
    """Reads of the count wait for ``go`` once begun (``reading``)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reading, self.go = asyncio.Event(), asyncio.Event()

    async def newest(self, client: str, since: datetime, limit: int) -> list[datetime]:
        self.reading.set()
        await self.go.wait()
        return await super().newest(client, since, limit)


async def test_a_failure_written_while_the_count_is_read_is_counted_once(
    database: Database,
) -> None:
    """A failure's row committed while another session read the address's count was in
    that count and counted again as still being written: with 2 failures under a limit
    of 3 the address was refused an attempt (421), which then did not count, so a client
    that left during its checks could try again (a flaky SMTP test found it)."""
    store = GatedReads(database)
    store.go.set()
    throttle = SharedAuthThrottle(store, Clock(), 3, WINDOW)
    await throttle.failed(CLIENT)
    store.go.clear()
    admit = asyncio.ensure_future(throttle.admit(CLIENT))
    await store.reading.wait()
    failure = asyncio.ensure_future(throttle.failed(CLIENT))
    await asyncio.wait([failure], timeout=2)  # written at once, or after the read
    store.go.set()
    async with asyncio.timeout(30):
        assert await admit  # 2 failures: a third check may run
        await failure
    assert await store.count() == 2


async def test_a_successful_auth_writes_nothing(database: Database) -> None:
    throttle = _throttle(database, Clock())
    for _ in range(5):
        assert await throttle.admit(CLIENT)
        await throttle.done(CLIENT, failed=False)
    assert await AuthFailureStore(database).count() == 0


async def test_the_store_unreachable_refuses_rather_than_admits(
    store_url: str, tmp_path: Path
) -> None:
    """A store that cannot be read says so (the caller answers 454); nothing admitted."""
    if store_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'no-such-dir' / 'store.sqlite3'}"
    else:
        url = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens on port 1
    db = Database(url)
    try:
        throttle = _throttle(db, Clock())
        with pytest.raises(StoreUnavailable):
            await throttle.admit(CLIENT)
    finally:
        await db.aclose()


async def test_a_failure_the_store_cannot_take_is_still_counted_here(
    database: Database,
) -> None:
    throttle = _throttle(database, Clock(), max_failures=2)
    async with database.write() as conn:
        await conn.execute(text("DROP TABLE auth_failures"))
    for _ in range(2):
        await throttle.failed(CLIENT)  # logged, not raised
    assert throttle.blocked(CLIENT)
