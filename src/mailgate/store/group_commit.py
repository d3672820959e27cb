"""Group commit: concurrent writers share one transaction, each still waits for the commit.

Accept means durable, so every SMTP session must wait for its message's commit
before it answers ``250``. A commit has a fixed cost (on SQLite about 1.8 ms of
event-loop time, plus the WAL write), so when many sessions finish DATA at once
their rows go into one transaction: whatever arrived while the previous commit
was running is written by the next. One writer alone sees no extra delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from mailgate.store.database import Database

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

#: writes a batch in the open transaction; returns one result per item, in order
WriteMany = Callable[[AsyncConnection, Sequence[T]], Awaitable[Sequence[R]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, db: Database, write: WriteMany[T, R], *, max_batch: int = 128) -> None:
        self.db = db
        self.write = write
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Return ``item``'s result once it is committed; raise what the transaction raised."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await asyncio.shield(done)  # a cancelled caller must not cancel the others' commit

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                async with self.db.write() as conn:
                    results = await self.write(conn, [item for item, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
