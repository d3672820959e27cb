"""Settings changed at run time are stored, replaced, forgotten and seen by another
process's connection (issue 11), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from mailgate.store import Database
from mailgate.store.runtime_settings import RuntimeSettingsStore
from tests.builders import NOW


async def test_saved_settings_load_back_replaced_and_forgotten(database: Database) -> None:
    store = RuntimeSettingsStore(database)
    assert (await store.load(), await store.version()) == ({}, (0, None))
    chaos = {"rcpt": {"code": 451, "probability": 50.0}}
    await store.save({"retry.initial_delay": 30.0, "smtp.chaos": chaos}, NOW)
    assert await store.load() == {"retry.initial_delay": 30.0, "smtp.chaos": chaos}
    first = await store.version()
    assert first == (2, NOW)

    later = NOW + timedelta(seconds=1)
    await store.save({"retry.initial_delay": 5.0}, later)  # replaced, not added
    assert await store.load() == {"retry.initial_delay": 5.0, "smtp.chaos": chaos}
    assert await store.version() == (2, later)

    assert await store.forget(["smtp.chaos", "never.stored"]) == 1
    assert await store.load() == {"retry.initial_delay": 5.0}
    assert (await store.version())[0] == 1
    assert await store.forget([]) == 0


async def test_another_connection_sees_a_change(database: Database, store_url: str) -> None:
    other_db = Database(store_url)  # a second process's engine on the same database
    try:
        mine, theirs = RuntimeSettingsStore(database), RuntimeSettingsStore(other_db)
        seen = await theirs.version()
        await mine.save({"inbox.max_messages": 50}, NOW)
        assert await theirs.version() != seen
        assert await theirs.load() == {"inbox.max_messages": 50}
        await theirs.save({"inbox.max_messages": 60}, NOW + timedelta(seconds=1))
        assert await mine.load() == {"inbox.max_messages": 60}
    finally:
        await other_db.aclose()
