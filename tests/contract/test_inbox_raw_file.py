"""A captured message whose raw bytes are in a file (a spooled DATA block) is stored as
if they had been given in memory, a block at a time (SQLite's blob I/O, PostgreSQL's
binary COPY), alone or committed together with small ones."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mailgate.errors import NotFound
from mailgate.ids import new_id
from mailgate.store import CapturedRecord, Database, InboxStore
from mailgate.store import inbox as inbox_module
from mailgate.store.inbox import RawFile
from mailgate.store.schema import inbox_raw
from tests.contract.test_inbox_bounds import BASE


def _record(subject: str) -> CapturedRecord:
    return dataclasses.replace(BASE, id=new_id(), subject=subject)


async def test_raw_from_a_file_is_stored_exactly(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "_BLOCK", 4096)  # many blocks, and a short last one
    raw = os.urandom(3 * 4096 + 123) + b"\x00\r\n.\r\n"
    path = tmp_path / "data.eml"
    path.write_bytes(raw)
    store = InboxStore(database)
    spooled, small = _record("spooled"), _record("small")
    await asyncio.gather(store.add(spooled, RawFile(path, len(raw))), store.add(small, b"tiny"))
    assert await store.raw(spooled.id, "default") == raw
    assert await store.raw(small.id, "default") == b"tiny"
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    nothing = _record("empty")
    await store.add(nothing, RawFile(empty, 0))
    assert await store.raw(nothing.id, "default") == b""


def _random_file(path: Path, size: int) -> Path:
    """``size`` random octets (a whole number of MiB) in ``path``, written a MiB at a time."""
    with path.open("wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    return path


def _peak_rss() -> int:
    """The process's peak resident set since :func:`_reset_peak`, in bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now


async def test_a_big_file_goes_in_never_whole_in_memory(database: Database, tmp_path: Path) -> None:
    """SQLite's allocations and asyncpg's buffers are not Python's (tracemalloc cannot
    see them): the process's peak RSS must not rise by anything like the message's size.
    A zeroblob outside a record's last column made SQLite build the message's size in
    zeros, twice; bound as a parameter, PostgreSQL's value was read whole and copied."""
    size = 48 * 1024 * 1024
    path = _random_file(tmp_path / "big.eml", size)
    store = InboxStore(database)
    await store.add(_record("warm-up"), b"small")  # threads, connections, caches
    _reset_peak()
    before = _peak_rss()
    big = _record("big")
    await store.add(big, RawFile(path, size))
    grown = _peak_rss() - before
    assert grown < size // 4, f"peak RSS grew {grown / 2**20:.1f} MiB"
    assert await store.raw(big.id, "default") == path.read_bytes()


async def test_big_bytes_are_stored_exactly(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes past a block go into SQLite a block at a time, as a file does."""
    monkeypatch.setattr(inbox_module, "_BLOCK", 4096)
    store = InboxStore(database)
    for size in (4096, 4097, 3 * 4096 + 123):
        raw = os.urandom(size)
        record = _record(f"{size} octets")
        await store.add(record, raw)
        assert await store.raw(record.id, "default") == raw


async def test_big_bytes_go_in_without_a_copy(database: Database) -> None:
    """Bound whole, SQLite copied a message twice (the value, then its record), asyncpg
    once (into its output buffer)."""
    size = 48 * 1024 * 1024
    raw = os.urandom(size)
    store = InboxStore(database)
    await store.add(_record("warm-up"), b"small")
    _reset_peak()
    before = _peak_rss()
    big = _record("big")
    await store.add(big, raw)
    grown = _peak_rss() - before
    assert grown < size // 4, f"peak RSS grew {grown / 2**20:.1f} MiB"


async def test_deleting_a_message_deletes_its_bytes(database: Database) -> None:
    """``inbox_raw`` goes with its row, whichever way the row goes (ON DELETE CASCADE)."""
    store = InboxStore(database)
    gone, cleared, too = _record("gone"), _record("cleared"), _record("too")
    for record in (gone, cleared, too):
        await store.add(record, b"bytes of " + record.subject.encode())
    await store.delete(gone.id, "default")
    await store.clear("default", query=[])  # the rest
    async with database.read() as conn:
        left = (await conn.execute(select(func.count()).select_from(inbox_raw))).scalar_one()
    assert left == 0


async def test_a_big_message_does_not_hold_back_small_ones_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """Captures share one flusher's transactions (group commit); a 48 MiB message copied
    in made every small one queued behind it wait for its copy, and every other SMTP
    session's 250 with it. A big message is now written in a transaction of its own,
    beside the batches: a small one submitted after it is committed first."""
    from tests.contract.conftest import _reset

    size = 48 * 1024 * 1024
    path = _random_file(tmp_path / "big.eml", size)
    db = Database(postgres_url)
    await _reset(db)
    await db.migrate()
    try:
        store = InboxStore(db)
        await store.add(_record("warm-up"), b"small")
        order: list[str] = []

        async def add(subject: str, raw: bytes | RawFile) -> None:
            await store.add(_record(subject), raw)
            order.append(subject)

        big = asyncio.create_task(add("big", RawFile(path, size)))
        await asyncio.sleep(0)  # the big one is submitted first
        await asyncio.gather(big, add("small", b"tiny"))
        assert order == ["small", "big"]
    finally:
        await db.aclose()


async def test_copy_raw_writes_the_bytes_a_block_at_a_time(
    database: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A download of a big message copies it from the store into a file, block by block
    (SQLite's blob I/O; PostgreSQL's substring, on bytea stored uncompressed)."""
    monkeypatch.setattr(inbox_module, "_BLOCK", 4096)
    store = InboxStore(database)
    for size in (0, 4096, 3 * 4096 + 123):
        raw = os.urandom(size)
        record = _record(f"{size} octets")
        await store.add(record, raw)
        with (tmp_path / "copy").open("w+b") as into:
            await store.copy_raw(record.id, "default", into)
            into.seek(0)
            assert into.read() == raw
    with (tmp_path / "copy").open("wb") as into, pytest.raises(NotFound):
        await store.copy_raw(record.id, "another tenant", into)
    with (tmp_path / "copy").open("wb") as into, pytest.raises(NotFound):
        await store.copy_raw(new_id(), "default", into)


async def test_copy_raw_never_holds_the_message(database: Database, tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    raw = os.urandom(size)
    store = InboxStore(database)
    big = _record("big")
    await store.add(big, raw)
    del raw
    with (tmp_path / "copy").open("wb") as into:
        await store.copy_raw(big.id, "default", into)  # warm-up: threads, statements
    _reset_peak()
    before = _peak_rss()
    with (tmp_path / "copy").open("wb") as into:
        await store.copy_raw(big.id, "default", into)
    grown = _peak_rss() - before
    assert grown < size // 4, f"peak RSS grew {grown / 2**20:.1f} MiB"
    assert (tmp_path / "copy").stat().st_size == size


async def test_postgresql_keeps_the_bytes_uncompressed(postgres_url: str) -> None:
    """Migration 0012: ``substring`` of a compressed value decompresses it from its start
    for every block (2.3 GB for a 68 MiB message read a MiB at a time)."""
    from sqlalchemy import text

    from tests.contract.conftest import _reset

    db = Database(postgres_url)
    await _reset(db)
    await db.migrate()
    try:
        query = text(
            "SELECT attstorage FROM pg_attribute"
            " WHERE attrelid = 'inbox_raw'::regclass AND attname = 'raw'"
        )
        async with db.read() as conn:
            assert (await conn.execute(query)).scalar_one() == b"e"  # EXTERNAL (a "char")
    finally:
        await db.aclose()


async def test_the_head_of_a_message_is_read_by_the_database(database: Database) -> None:
    store = InboxStore(database)
    raw = os.urandom(5000) + b"\x00\r\n"
    record = _record("head")
    await store.add(record, raw)
    for head in (1, 4096, len(raw), len(raw) + 10):
        assert await store.raw(record.id, "default", head=head) == raw[:head]
    with pytest.raises(NotFound):
        await store.raw(record.id, "another tenant", head=10)


async def test_the_head_of_a_big_message_is_read_alone(database: Database) -> None:
    """SQLite's ``substr`` reads the whole value before it cuts it (a header view of a
    68 MiB message cost 68 MiB): the head is read by blob I/O instead."""
    size = 48 * 1024 * 1024
    store = InboxStore(database)
    big = _record("big")
    await store.add(big, os.urandom(size))
    await store.raw(big.id, "default", head=10)  # warm-up: threads, statements
    _reset_peak()
    before = _peak_rss()
    assert len(await store.raw(big.id, "default", head=256 * 1024)) == 256 * 1024
    grown = _peak_rss() - before
    assert grown < size // 4, f"peak RSS grew {grown / 2**20:.1f} MiB"
