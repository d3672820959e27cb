"""Conditional document updates committed together, as a group commit does.

Every lease and every write-back is an update on the condition that the document is
still the version read. Sent one commit each they cost a round trip each, and a
listener on the collection pays for every commit: the emulator answers each one with
the whole query result again, so 1,000 documents written back one by one cost the
listener a million documents decoded. Here the updates asked for while a commit is in
flight wait for it and then go together in the next one (at most 500 writes, Firestore's
limit). A batch is atomic: when one of its conditions fails (another gateway leased the
document, it was deleted) the whole commit is refused, and its updates are then sent
one by one so each gets its own answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import firestore

__all__ = ["UpdateBatcher", "read_documents"]

MAX_WRITES = 500  #: Firestore's most writes in one commit
_READS = 100  #: documents read in one request
_CONFLICT = (google_errors.FailedPrecondition, google_errors.NotFound)


@dataclass(slots=True)
class _Update:
    path: str
    fields: dict[str, Any]
    version: datetime
    done: asyncio.Future[bool]


class UpdateBatcher:
    """``await update(path, fields, version)``: True when written, False when the document
    changed since ``version`` or is gone; other errors are raised to each caller."""

    def __init__(self, client: firestore.AsyncClient) -> None:
        self.client = client
        self.commits = 0  #: commits sent, the one-by-one ones after a refused batch included
        self._pending: list[_Update] = []
        self._task: asyncio.Task[None] | None = None

    async def update(self, path: str, fields: dict[str, Any], version: datetime) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Update(path, fields, version, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(done)

    async def commit_all(self, updates: list[tuple[str, dict[str, Any], datetime]]) -> bool:
        """``updates`` (of distinct documents) in one commit, now: True when written, False
        when one of them changed since its version and none was written."""
        writes = self.client.batch()
        for path, fields, version in updates:
            option = self.client.write_option(last_update_time=version)
            writes.update(self.client.document(path), fields, option=option)
        self.commits += 1
        try:
            await writes.commit()
        except _CONFLICT:
            return False
        return True

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let the callers of this turn of the loop join
            batch, rest = _one_batch(self._pending)
            self._pending = rest
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for item in batch + self._pending:
                    item.done.cancel()
                self._pending = []
                raise
            except Exception as exc:  # handed to every caller waiting for this commit
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)

    async def _commit(self, batch: list[_Update]) -> None:
        """One commit; when it is refused, the documents are read to find those that
        changed (False for them), and the rest committed again: then each alone."""
        if len(batch) > 1:
            if await self._together(batch):
                return
            batch = await self._unchanged(batch)
            if len(batch) > 1 and await self._together(batch):
                return
        await asyncio.gather(*(self._alone(item) for item in batch))

    async def _together(self, batch: list[_Update]) -> bool:
        if not await self.commit_all([_request(item) for item in batch]):
            return False  # one of them changed
        for item in batch:
            _settle(item, True)
        return True

    async def _unchanged(self, batch: list[_Update]) -> list[_Update]:
        """The updates whose document is still the version they were asked for; the
        others are answered False."""
        snaps = await read_documents(self.client, [item.path for item in batch])
        unchanged = []
        for item in batch:
            snap = snaps.get(item.path)
            if snap is not None and snap.exists and snap.update_time == item.version:
                unchanged.append(item)
            else:
                _settle(item, False)
        return unchanged

    async def _alone(self, item: _Update) -> None:
        try:
            written = await self.commit_all([_request(item)])
        except Exception as exc:  # this caller's error, not the others'
            if not item.done.done():
                item.done.set_exception(exc)
        else:
            _settle(item, written)


async def read_documents(client: firestore.AsyncClient, paths: Sequence[str]) -> dict[str, Any]:
    """path → snapshot (``exists`` False where there is no document), 100 a request."""
    wanted = sorted(set(paths))
    snaps: dict[str, Any] = {}
    for start in range(0, len(wanted), _READS):
        refs = [client.document(p) for p in wanted[start : start + _READS]]
        async for snap in client.get_all(refs):
            snaps[snap.reference.path] = snap
    return snaps


def _request(item: _Update) -> tuple[str, dict[str, Any], datetime]:
    return item.path, item.fields, item.version


def _one_batch(pending: list[_Update]) -> tuple[list[_Update], list[_Update]]:
    """Up to :data:`MAX_WRITES` updates of distinct documents (a second update of one
    document waits for the next commit: its condition is the version before the first)."""
    batch: list[_Update] = []
    rest: list[_Update] = []
    paths: set[str] = set()
    for item in pending:
        if len(batch) < MAX_WRITES and item.path not in paths:
            batch.append(item)
            paths.add(item.path)
        else:
            rest.append(item)
    return batch, rest


def _settle(item: _Update, written: bool) -> None:
    if not item.done.done():
        item.done.set_result(written)
