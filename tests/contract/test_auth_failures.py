"""Failed SMTP AUTH counted through the store (``auth_failures``), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from mailgate.store import Database
from mailgate.store.auth_failures import PRUNE_BATCH, AuthFailureStore
from tests.builders import NOW

WINDOW = 300.0
CLIENT = "192.0.2.7"


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
