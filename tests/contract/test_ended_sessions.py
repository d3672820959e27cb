"""Admin UI sessions ended by a logout (``ended_sessions``), on SQLite and PostgreSQL: a
session ended through one engine is ended for another on the same store (another
``serve`` process), and the rows of expired sessions go as new ones are written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mailgate.store import Database
from mailgate.store.ended_sessions import PRUNE_BATCH, EndedSessionStore
from tests.builders import NOW

LATER = NOW + timedelta(hours=12)


@pytest.fixture
async def other(database: Database, store_url: str) -> AsyncIterator[Database]:
    """A second engine on the same store: another ``serve`` process's."""
    db = Database(store_url)
    yield db
    await db.aclose()


async def test_a_session_ended_through_one_engine_is_ended_for_the_other(
    database: Database, other: Database
) -> None:
    one, two = EndedSessionStore(database), EndedSessionStore(other)
    assert not await two.ended("s1")
    await one.end("s1", LATER, NOW)
    assert await two.ended("s1") and await one.ended("s1")
    assert not await two.ended("s2")
    await two.end("s1", LATER, NOW)  # twice (two tabs logging out) is once
    assert await one.count() == 1


async def test_two_processes_ending_sessions_at_once_lose_none(
    database: Database, other: Database
) -> None:
    one, two = EndedSessionStore(database), EndedSessionStore(other)
    await asyncio.gather(
        *(one.end(f"a{n}", LATER, NOW) for n in range(20)),
        *(two.end(f"b{n}", LATER, NOW) for n in range(20)),
        *(two.end(f"a{n}", LATER, NOW) for n in range(0, 20, 2)),  # the same, at once
    )
    assert await one.count() == 40
    assert all([await two.ended(f"a{n}") for n in range(20)])


async def test_expired_sessions_are_pruned_as_new_ones_are_ended(database: Database) -> None:
    store = EndedSessionStore(database)
    for n in range(PRUNE_BATCH + 5):
        await store.end(f"old{n}", NOW + timedelta(seconds=1 + n), NOW)
    after = NOW + timedelta(seconds=PRUNE_BATCH + 6)  # every one of them expired
    await store.end("new", after + timedelta(hours=12), after)
    assert await store.count() == 5 + 1  # a batch at a time: the rest go with the next
    assert not await store.ended("old0") and await store.ended(f"old{PRUNE_BATCH + 4}")
    await store.end("newer", after + timedelta(hours=12), after)
    assert await store.count() == 2
