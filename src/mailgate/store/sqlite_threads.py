"""SQLite's side of :meth:`Database.read` and :meth:`Database.write`: SQLAlchemy's
synchronous engine on the standard ``sqlite3`` driver, each statement run whole in a
database thread with its rows fetched there.

SQLAlchemy's asyncio layer on aiosqlite did the same in four hand-offs a statement
(cursor, execute, fetch, close: each a wake-up of another thread and back), kept a
thread per pooled connection, and its import brought the ORM: 8.8 MiB of an idle
``mailgate dev``. PostgreSQL keeps asyncpg behind SQLAlchemy's ``AsyncConnection``;
:class:`ThreadedConnection` has the part of that class the stores use.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    ParamSpec,
    TypeVar,
    TypeVarTuple,
    overload,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, CursorResult, Dialect, Executable
    from sqlalchemy.sql.selectable import TypedReturnsRows

__all__ = ["PrefetchingConnection", "ThreadedConnection", "in_thread", "opened_in_thread"]

P = ParamSpec("P")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")

#: statement parameters, as SQLAlchemy takes them: one set, or a list for executemany
Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]]


async def in_thread(executor: Executor, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args)`` in ``executor``. A caller cancelled meanwhile still waits for it to
    end, so nothing else touches its connection (or takes the write lock) while it runs."""
    return await _waited(executor, functools.partial(fn, *args, **kwargs), None)


async def opened_in_thread(
    executor: Executor, fn: Callable[[], R], close: Callable[[R], object]
) -> R:
    """``fn()`` in ``executor``, for what must be closed (a connection, a transaction):
    a caller cancelled meanwhile waits for it, then has ``close`` run on what it opened,
    in the same executor, so before anything submitted later (the next writer's BEGIN
    runs after this one's ROLLBACK)."""
    return await _waited(executor, fn, close)


async def _waited(
    executor: Executor, fn: Callable[[], R], close: Callable[[R], object] | None
) -> R:
    job = asyncio.get_running_loop().run_in_executor(executor, fn)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        if close is not None and not job.cancelled() and job.exception() is None:
            executor.submit(close, job.result())
        raise


class ThreadedConnection:
    """A checked-out connection of the synchronous engine, driven from the event loop:
    every call runs in ``executor``, one at a time (the caller awaits each)."""

    __slots__ = ("_conn", "_executor")

    def __init__(self, conn: Connection, executor: Executor) -> None:
        self._conn = conn
        self._executor = executor

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*Ts], parameters: Parameters | None = None
    ) -> CursorResult[*Ts]: ...

    @overload
    async def execute(
        self, statement: Executable, parameters: Parameters | None = None
    ) -> CursorResult[*tuple[Any, ...]]: ...

    async def execute(
        self, statement: Executable, parameters: Parameters | None = None
    ) -> CursorResult[*tuple[Any, ...]]:
        """The statement's result, its rows already read (:class:`PrefetchingConnection`)."""
        return await in_thread(self._executor, self._conn.execute, statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``fn(connection, *args)`` in the database thread (Alembic, schema inspection)."""
        return await in_thread(self._executor, fn, self._conn, *args, **kwargs)


class PrefetchingConnection(sqlite3.Connection):
    """A ``sqlite3`` connection whose cursors read a statement's rows as it runs.

    The statement runs in a database thread; SQLAlchemy then reads its rows from the
    result on the event loop, where this cursor hands them over from memory instead of
    stepping SQLite there (aiosqlite's cursors do the same).
    """

    def cursor(self, factory: Any = None) -> Any:
        return PrefetchingCursor(self) if factory is None else super().cursor(factory)


class PrefetchingCursor(sqlite3.Cursor):
    """Reads every row when it executes; ``fetch*`` return them from memory."""

    _rows: deque[Any]

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self._rows = deque()

    def execute(self, sql: str, parameters: Any = (), /) -> PrefetchingCursor:
        super().execute(sql, parameters)
        self._rows = deque(super().fetchall()) if self.description is not None else deque()
        return self

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._rows
        n = min(self.arraysize if size is None else size, len(rows))
        return [rows.popleft() for _ in range(n)]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __next__(self) -> Any:
        if not self._rows:
            raise StopIteration
        return self._rows.popleft()
