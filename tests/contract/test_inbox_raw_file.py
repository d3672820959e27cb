"""A captured message whose raw bytes are in a file (a spooled DATA block) is stored as
if they had been given in memory, on SQLite (copied in a block at a time) and on
PostgreSQL (read whole), alone or committed together with small ones."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from mailgate.ids import new_id
from mailgate.store import CapturedRecord, Database, InboxStore
from mailgate.store import inbox as inbox_module
from mailgate.store.inbox import RawFile
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
