"""Group commit: concurrent writers share one transaction, each still waits for the commit.

Accept means durable, so every SMTP session must wait for its message's commit
before it answers ``250``. A commit has a fixed cost (on SQLite about 1.8 ms of
event-loop time, plus the WAL write), so when many sessions finish DATA at once
their rows go into one transaction: whatever arrived while the previous commit
was running is written by the next. One writer alone sees no extra delay.

Sharing a transaction must not mean sharing a fate: when the batch's statements
fail, the transaction rolled back, so nothing of it is durable and each item is
written again alone, in its own transaction. Only the item that fails alone sees
the exception; the others get their own results (issue 5, item 10: one poisoned
upstream reply used to fail 15 innocent outcomes, which were then delivered again).
When the *commit* itself fails the outcome is unknown (the server may have
committed before the connection broke), so nothing is retried: every writer gets
the exception rather than risk writing an item twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy import Connection

from mailgate.errors import CommitOutcomeUnknown, StoreUnavailable
from mailgate.store.database import Database

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

#: writes a batch in the open transaction; returns one result per item, in order.
#: It may be called again with a subset of an earlier batch (after that batch rolled
#: back), so it must not keep state of its own between calls. It runs as one
#: :meth:`Database.transaction` (on SQLite in the database thread).
WriteMany = Callable[[Connection, Sequence[T]], Sequence[R]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        db: Database,
        write: WriteMany[T, R],
        *,
        max_batch: int = 128,
        small: Callable[[Sequence[T]], bool] | None = None,
    ) -> None:
        """``small``: whether a batch is small enough for
        :meth:`Database.small_transaction` (on SQLite: written on the event loop); an
        item that is not small alone is written in a transaction of its own."""
        self.db = db
        self.write = write
        self.max_batch = max_batch
        self.small = small
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._alone: set[asyncio.Task[None]] = set()  #: big items being written

    async def submit(self, item: T) -> R:
        """Return ``item``'s result once it is committed; raise what writing *it* raised.

        A failed shared transaction reaches only the items that fail again alone,
        or every item if the database is unavailable or the commit itself failed.
        """
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self.small is not None and not self.small([item]):
            # a big item (a 50 MB message copied in) is written beside the batches, in
            # a transaction of its own: small ones must not wait for it (on PostgreSQL;
            # SQLite has one writer at a time, whatever is done here)
            alone = asyncio.create_task(self._commit_big((item, done)))
            self._alone.add(alone)
            alone.add_done_callback(self._alone.discard)
        else:
            self._pending.append((item, done))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
        # a cancelled caller cancels only its own future: its item is written all the
        # same (the flusher's batch, or the big item's task), futures already done skipped
        return await done

    async def _commit_big(self, pair: tuple[T, asyncio.Future[R]]) -> None:
        failure, _ = await self._commit([pair])
        if failure is not None:
            _fail([pair], failure)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            failure, rolled_back = await self._commit(batch)
            if failure is not None and rolled_back and len(batch) > 1:
                await self._commit_alone(batch)
            elif failure is not None:
                _fail(batch, failure)

    async def _commit_alone(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Write each item in its own transaction; stop if the database is down.

        An unreachable database is nobody's fault in particular: once one item
        meets it, the rest get the same error instead of a wait each.
        """
        for i, pair in enumerate(batch):
            failure, _ = await self._commit([pair])
            if isinstance(failure, StoreUnavailable):
                _fail(batch[i:], failure)
                return
            if failure is not None:
                _fail([pair], failure)

    async def _commit(
        self, batch: list[tuple[T, asyncio.Future[R]]]
    ) -> tuple[Exception | None, bool]:
        """Write ``batch`` in one transaction and resolve its futures with the results.

        On failure, return the exception (futures untouched) and whether the
        transaction certainly rolled back: a statement failed, so nothing of it is
        durable. If the commit itself failed, the outcome is unknown: an unavailable
        store is then :class:`CommitOutcomeUnknown`, which its writers must not retry
        (the others they may: nothing of theirs was written).
        """
        written = False

        def write(conn: Connection, items: Sequence[T]) -> Sequence[R]:
            nonlocal written
            results = self.write(conn, items)
            written = True  # from here on only COMMIT can fail
            return results

        items = [item for item, _ in batch]
        small = self.small is not None and self.small(items)
        try:
            if small:
                results = await self.db.small_transaction(write, items)
            else:
                results = await self.db.transaction(write, items)
        except StoreUnavailable as exc:
            if not written or isinstance(exc, CommitOutcomeUnknown):
                return exc, not written
            unknown = CommitOutcomeUnknown(f"the commit's outcome is unknown: {exc}")
            unknown.__cause__ = exc
            return unknown, False
        except Exception as exc:
            return exc, not written
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)
        return None, True


def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)
