"""The collection listener against the emulator: each version of a document handed on
once, however often the stream sends it again (the emulator sends the whole result
again on every commit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from mailgate.sources.firestore.listener import CollectionListener, Found
from tests.firestore_peer import WRITE_RETRY, Emulator


@contextlib.asynccontextmanager
async def _listening(emulator: Emulator) -> AsyncIterator[tuple[list[Found], list[str]]]:
    found: list[Found] = []
    states: list[str] = []

    def client() -> firestore.AsyncClient:
        return firestore.AsyncClient(project=emulator.project, credentials=AnonymousCredentials())

    listener = CollectionListener(client, "mail", found.append, states.append)
    task = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(20):
            while "live" not in states:  # noqa: ASYNC110 (a list the listener appends to)
                await asyncio.sleep(0.02)
        yield found, states
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(found: list[Found], count: int) -> None:
    async with asyncio.timeout(20):
        while len(found) < count:  # noqa: ASYNC110 (a list the listener appends to)
            await asyncio.sleep(0.02)


async def test_each_version_is_handed_on_once(
    firestore_emulator: Emulator, firestore_client: Any
) -> None:
    mail = firestore_client.collection("mail")
    await mail.document("before").set({"n": 0})  # there when the listener starts
    async with _listening(firestore_emulator) as (found, states):
        await _until(found, 1)
        batch = firestore_client.batch()
        for i in range(30):
            batch.set(mail.document(f"d{i:02}"), {"n": i, "nested": {"to": ["a@example.com"]}})
        await batch.commit(retry=WRITE_RETRY)
        await _until(found, 31)
        for n in range(1, 4):  # each commit: the emulator sends all 31 documents again
            await mail.document("d07").update({"n": 100 + n})
        await firestore_client.collection("other").document("x").set({"n": 1})
        await _until(found, 34)
        await asyncio.sleep(0.5)  # anything handed on twice would come now
    paths = Counter(path for path, _, _ in found)
    assert paths == Counter(
        {"mail/before": 1, "mail/d07": 4} | {f"mail/d{i:02}": 1 for i in range(30) if i != 7}
    )
    d07 = [(data["n"], version) for path, data, version in found if path == "mail/d07"]
    assert [n for n, _ in d07] == [7, 101, 102, 103]
    assert [v for _, v in d07] == sorted(v for _, v in d07)  # update times, nanoseconds kept
    first = next(data for path, data, _ in found if path == "mail/d00")
    assert first == {"n": 0, "nested": {"to": ["a@example.com"]}}
    assert states[:2] == ["connecting", "live"] and "broken" not in states


async def test_a_stream_that_never_becomes_current_is_opened_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that accepts the connection and never answers (as the emulator has done
    under load): after ``open_timeout`` the stream counts as broken and is opened again."""
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()  # read whatever comes, answer nothing, until closed

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{port}")
    states: list[str] = []

    def client() -> firestore.AsyncClient:
        return firestore.AsyncClient(project="demo-silent", credentials=AnonymousCredentials())

    listener = CollectionListener(client, "mail", lambda _: None, states.append, open_timeout=0.5)
    task = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(20):
            while states.count("connecting") < 2:  # noqa: ASYNC110 (the listener's list)
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        for writer in connections:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()
    assert states[:3] == ["connecting", "broken", "connecting"] and connections
