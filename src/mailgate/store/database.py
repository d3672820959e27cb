"""Engine, connections and migrations for SQLite and PostgreSQL.

The dialect differences live here: URL drivers, SQLite pragmas, and the
write lock. SQLite allows one writer at a time; serialising writes in-process
avoids ``database is locked`` errors and lets readers run freely under WAL.

The hot paths (leasing, settling outcomes, group commits) run as one synchronous
function per transaction (:meth:`Database.transaction`). On SQLite that function
runs whole in the database thread: a hand-off per statement, let alone aiosqlite's
four (cursor, execute, fetch, close, each a cross-CPU wake-up costing 60-80 µs of CPU
on a VM), made the store most of the relay's CPU. On PostgreSQL the same function
runs through ``run_sync`` on asyncpg. The other queries (:meth:`Database.read`,
:meth:`Database.write`) run a statement per hand-off, on SQLAlchemy's synchronous
engine in threads for SQLite (:mod:`mailgate.store.sqlite_threads`) and its asyncio
layer on asyncpg for PostgreSQL.

This is also where database errors cross into mailgate: :meth:`Database.write`
and :meth:`Database.read` turn SQLAlchemy's and the drivers' exceptions into
:class:`~mailgate.errors.StoreError` (see :func:`translated`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, make_url

from mailgate.errors import ConfigError, StoreError, StoreUnavailable
from mailgate.store.sqlite_threads import (
    PrefetchingConnection,
    ThreadedConnection,
    in_thread,
    opened_in_thread,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    #: what :meth:`Database.read` and :meth:`Database.write` hand out: asyncpg's
    #: connection behind SQLAlchemy's asyncio layer, or SQLite's run in a thread
    StoreConnection = AsyncConnection | ThreadedConnection

__all__ = ["Database", "driver_url", "redact_url", "translated"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: how long a SQLite statement waits for another process's write lock (in a thread)
BUSY_TIMEOUT_MS = 30_000
#: WAL written by transactions on the event loop before a checkpoint in the thread
#: (SQLite's own automatic checkpoint is at 1,000 pages of 4 KiB)
CHECKPOINT_BYTES = 4 * 1024 * 1024

#: SQLite connections reading at once (each in a read block, across its awaits); the
#: pool has room for them and the writers, so no thread ever waits for a connection
READ_CONNECTIONS = 12
#: threads running SQLite reads (statements, not blocks: a block holds no thread between
#: its statements)
READ_THREADS = 4

#: how long ``/readyz`` waits for the store to answer before saying it does not: a
#: PostgreSQL frozen or cut off by the network keeps the connection open and silent
CHECK_SECONDS = 5.0

#: how long a PostgreSQL statement (the pool's ping among them) and a new connection may
#: take before the store is unavailable: a server frozen or cut off by the network keeps
#: its connections open and silent, and a POST waited on it for ever (asyncpg has no
#: statement time-out by default, and waits 60 s for a connection). Migrations, whose
#: statements may run long on a big store, have none (:meth:`Database.migrate`).
STATEMENT_SECONDS = 30.0
CONNECT_SECONDS = 10.0

#: PostgreSQL advisory-lock key held while migrating: "mailgate" in ASCII, a bigint.
MIGRATION_LOCK = int.from_bytes(b"mailgate", "big")

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def driver_url(url: str) -> str:
    """``sqlite:///x`` → ``sqlite+pysqlite:///x`` (any SQLite driver named: the standard
    ``sqlite3`` is the one used); ``postgresql://`` → asyncpg unless a driver is named."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # never shown: it may hold a password
        raise ConfigError(
            "the database URL cannot be parsed: use sqlite:///path or"
            " postgresql://user:password@host:port/database"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(
            f"unsupported database URL {parsed.render_as_string()!r}: use sqlite:/// or postgresql://"
        )
    if backend == "sqlite" and _in_memory(parsed):
        raise ConfigError(
            "an in-memory SQLite database cannot work: each of mailgate's connections"
            " would open its own, empty one; give a file (sqlite:///path)"
        )
    if "+" in parsed.drivername and backend != "sqlite":
        return url
    return parsed.set(drivername=_DRIVERS[backend]).render_as_string(hide_password=False)


def _in_memory(parsed: URL) -> bool:
    database = parsed.database or ""
    return (
        database in ("", ":memory:")
        or database.startswith("file::memory:")
        or parsed.query.get("mode") == "memory"
    )


def redact_url(url: str) -> str:
    """The URL with any password masked (also one given as ``?password=``, which
    asyncpg takes as libpq does): safe to print or log."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "*** (not a database URL)"  # where a password would be cannot be told
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", shown)


class Database:
    """One engine plus the transaction helpers every store query uses."""

    def __init__(self, url: str) -> None:
        self.url = driver_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine: AsyncEngine | None = None  #: PostgreSQL's
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._sqlite: Engine | None = None  #: SQLite's, driven from the database threads
        self._thread: ThreadPoolExecutor | None = None  #: SQLite's writes, one at a time
        self._readers: ThreadPoolExecutor | None = None
        self._reading: asyncio.Semaphore | None = None  #: READ_CONNECTIONS
        self._loop_conn: tuple[Connection, sqlite3.Connection] | None = None  #: _on_loop's
        self._unsynced = 0  #: rows written on the loop since the last checkpoint
        self._checkpointing: asyncio.Future[None] | None = None
        if self.is_sqlite:
            # No rollback when a connection goes back to the pool: every connection is
            # used in a context manager that already ended its transaction.
            self._sqlite = create_engine(
                self.url,
                connect_args={
                    "timeout": 30,
                    "check_same_thread": False,
                    "factory": PrefetchingConnection,
                },
                pool_reset_on_return=None,
                # the readers, the write thread, the loop's connection and a checkpoint
                pool_size=READ_CONNECTIONS + 3,
                max_overflow=2,
            )
            event.listen(self._sqlite, "connect", _sqlite_connect)
            event.listen(self._sqlite, "begin", _sqlite_begin)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="mailgate-sqlite")
            self._readers = ThreadPoolExecutor(READ_THREADS, "mailgate-sqlite-read")
            self._reading = asyncio.Semaphore(READ_CONNECTIONS)
        else:
            from sqlalchemy.ext.asyncio import create_async_engine

            self.engine = create_async_engine(
                self.url,
                pool_size=10,
                max_overflow=10,
                pool_pre_ping=True,
                connect_args={"command_timeout": STATEMENT_SECONDS, "timeout": CONNECT_SECONDS},
            )
        self._file = _sqlite_file(self.url) if self.is_sqlite else None
        self._file_identity: tuple[int, int] | None = None  #: (device, inode) at migrate

    @property
    def dialect(self) -> Dialect:
        engine = self._sqlite if self._sqlite is not None else self.engine
        assert engine is not None
        return engine.dialect

    async def transaction(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``fn(conn, *args)`` in one write transaction that commits when it returns.

        On SQLite it runs in the database thread, under the in-process write lock and
        ``BEGIN IMMEDIATE``, so a transaction costs one hand-off instead of several per
        statement; the lock is held until the thread is done even if the caller is
        cancelled. On PostgreSQL it runs through ``run_sync``.
        """
        with translated():
            if self._sqlite is None or self._write_lock is None:
                assert self.engine is not None
                async with self.engine.begin() as aconn:
                    return await aconn.run_sync(fn, *args, **kwargs)
            async with self._write_lock:
                return await self._in_thread(fn, *args, **kwargs)

    async def small_transaction(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """:meth:`transaction` for a few small rows (captured 1 KB messages): on SQLite
        run on the event loop itself when the file's write lock is free at once.

        The hand-off to the database thread and back costs more than such a transaction
        (two cross-thread wake-ups, and SQLAlchemy's Python holds the GIL in either
        thread, so the loop waits for it anyway). The loop never waits for the lock:
        ``BEGIN IMMEDIATE`` with ``busy_timeout`` 0, and when another process holds the
        lock the transaction goes to the thread, which may wait. Nor for the disk: the
        WAL's automatic checkpoint (which syncs the file) is off for these commits and
        done in the thread instead, every :data:`CHECKPOINT_BYTES` written here.
        Only the caller knows its rows are small: big ones belong in :meth:`transaction`.
        """
        if self._sqlite is None or self._write_lock is None:
            return await self.transaction(fn, *args, **kwargs)
        with translated():
            async with self._write_lock:
                try:
                    result = self._on_loop(fn, *args, **kwargs)
                except _Busy:
                    return await self._in_thread(fn, *args, **kwargs)
                return result

    def _on_loop(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        conn, driver = self._loop_connection()
        before = driver.total_changes
        try:
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise _Busy from exc
            self._close_loop_connection()
            raise
        # The transaction is the driver's, begun and ended here: SQLAlchemy's begin and
        # commit machinery was a tenth of a captured message's CPU. A statement ``fn``
        # runs through ``conn`` opens SQLAlchemy's own transaction record only
        # (_sqlite_begin issues no BEGIN on this connection); its commit is ours.
        try:
            result = fn(conn, *args, **kwargs)
            conn.commit()  # SQLAlchemy's record, and COMMIT if it had one
            if driver.in_transaction:
                driver.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
            self._close_loop_connection()  # the next one starts from a fresh connection
            raise
        self._checkpoint_later(driver.total_changes - before)
        self._committed_to_the_file()
        return result

    def _loop_connection(self) -> tuple[Connection, sqlite3.Connection]:
        """The connection :meth:`_on_loop` keeps: it never waits for the write lock
        (``busy_timeout`` 0) and never checkpoints (:meth:`_checkpoint_later` does)."""
        if self._loop_conn is None:
            assert self._sqlite is not None
            conn = self._sqlite.connect()
            driver = conn.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            driver.execute("PRAGMA busy_timeout=0")
            driver.execute("PRAGMA wal_autocheckpoint=0")
            conn.execution_options(mailgate_manual=True)  # _on_loop begins and commits
            self._loop_conn = (conn, driver)
        return self._loop_conn

    def _close_loop_connection(self) -> None:
        if self._loop_conn is not None:
            conn, _ = self._loop_conn
            self._loop_conn = None
            with contextlib.suppress(Exception):
                conn.invalidate()  # its settings are not the pool's: never handed out again
                conn.close()

    def _checkpoint_later(self, changes: int) -> None:
        """Count what :meth:`_on_loop` wrote (rows, taken as a page each: an upper bound
        for small rows); past :data:`CHECKPOINT_BYTES`, a passive checkpoint in the
        database thread copies the WAL into the file (readers and writers go on)."""
        self._unsynced += changes
        if self._unsynced * 4096 < CHECKPOINT_BYTES or self._checkpointing is not None:
            return
        self._unsynced = 0
        job = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)
        self._checkpointing = asyncio.ensure_future(job)
        self._checkpointing.add_done_callback(self._checkpointed)

    def _checkpoint(self) -> None:
        assert self._sqlite is not None
        with self._sqlite.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpointed(self, job: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if not job.cancelled() and (exc := job.exception()) is not None:
            log.warning("WAL checkpoint failed (SQLite tries again at a later commit): %r", exc)

    async def _in_thread(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``fn`` in a write transaction in the database thread; the caller holds the
        in-process write lock."""
        assert self._thread is not None
        return await in_thread(self._thread, lambda: self._in_sqlite_thread(fn, *args, **kwargs))

    def _in_sqlite_thread(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        assert self._sqlite is not None
        with self._sqlite.connect() as conn:
            conn.execution_options(mailgate_write=True)
            with conn.begin():
                result = fn(conn, *args, **kwargs)
        self._committed_to_the_file()
        return result

    def _committed_to_the_file(self) -> None:
        """Raise :class:`StoreUnavailable` if the SQLite file at the path migrated is gone
        or another one: called after each write commits, before anyone is told it did.

        Connections already open go on writing to a file that was removed (its directory
        deleted, a temp cleaner) or replaced: every commit succeeds, and is lost at the
        next start. Accept means durable, so such a commit must not become a 202 or a
        ``250``; the client is told to try again (503, 451) instead. A stat a transaction
        (about a microsecond); an error other than "no such file" (a directory made
        unreadable) proves nothing about the file and is left to ``/readyz``.
        """
        if self._file is None or self._file_identity is None:
            return
        try:
            st = os.stat(self._file)
        except FileNotFoundError as exc:
            raise StoreUnavailable("the database file was removed after it was opened") from exc
        except OSError:
            return
        if (st.st_dev, st.st_ino) != self._file_identity:
            raise StoreUnavailable("the database file was replaced after it was opened")

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[StoreConnection]:
        """A transaction that commits on exit; serialised on SQLite.

        On SQLite it starts with ``BEGIN IMMEDIATE``: taking the write lock up front
        means a read-then-write (leasing) never fails half-way with SQLITE_BUSY when
        another process shares the file; ``busy_timeout`` makes it wait instead. Its
        statements run in the database thread that runs :meth:`transaction`'s.
        """
        with translated():
            if self._sqlite is None or self._write_lock is None or self._thread is None:
                assert self.engine is not None
                async with self.engine.begin() as aconn:
                    yield aconn
                return
            async with self._write_lock:
                engine = self._sqlite
                conn = await opened_in_thread(self._thread, lambda: _begin_write(engine), _close)
                try:
                    yield ThreadedConnection(conn, self._thread)
                except BaseException:
                    await in_thread(self._thread, conn.close)  # rolls back
                    raise
                await in_thread(self._thread, _commit, conn)
                self._committed_to_the_file()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[StoreConnection]:
        """A connection to read through; on SQLite its statements run in the reading
        threads and see one snapshot (a deferred ``BEGIN`` at the first)."""
        with translated():
            if self._sqlite is None or self._readers is None or self._reading is None:
                assert self.engine is not None
                async with self.engine.connect() as aconn:
                    yield aconn
                return
            async with self._reading:
                conn = await opened_in_thread(self._readers, self._sqlite.connect, _close)
                try:
                    yield ThreadedConnection(conn, self._readers)
                finally:
                    await in_thread(self._readers, conn.close)  # ends the snapshot

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision shipped in the package.

        Safe when several processes start at once against one database. On
        PostgreSQL a transaction-scoped advisory lock serialises them (without it
        both create ``alembic_version`` and the loser dies of ``UniqueViolation``);
        the DDL is transactional, so the second sees the first's result and has
        nothing left to do. On SQLite ``BEGIN IMMEDIATE`` already takes the file's
        write lock for the whole migration.

        On PostgreSQL it runs on a connection of its own without
        :data:`STATEMENT_SECONDS`: a migration's statement on a big store, or the wait
        for another process's migration behind the lock, may take longer.
        """
        if self.is_sqlite:
            async with self.write() as conn:
                await _migrate(conn)
        else:
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import NullPool

            engine = create_async_engine(
                self.url, poolclass=NullPool, connect_args={"timeout": CONNECT_SECONDS}
            )
            try:
                with translated():
                    async with engine.begin() as conn:
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                        )
                        await _migrate(conn)
            finally:
                await engine.dispose()
        if self._file is not None:
            st = await asyncio.to_thread(os.stat, self._file)
            self._file_identity = (st.st_dev, st.st_ino)

    async def check(self) -> str | None:
        """Why the store is not ready, or None: reachable, and migrated to the newest
        revision this mailgate ships (for ``/readyz``).

        A SQLite file is looked at on disk too: connections already open keep reading a
        file that was removed, replaced or spoilt (through their descriptors and page
        cache), so a query alone would say all is well while every write goes to a file
        no restart will see.
        """
        if self._file is not None and self._file_identity is not None:
            problem = await asyncio.to_thread(_file_problem, self._file, self._file_identity)
            if problem is not None:
                return problem
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                async with self.read() as conn:
                    current = (
                        await conn.execute(text("SELECT version_num FROM alembic_version"))
                    ).scalar_one_or_none()
        except StoreError as exc:  # no database, or no alembic_version table in it
            return f"unreachable ({type(exc.__cause__ or exc).__name__})"
        except TimeoutError:  # a server that takes connections but never answers
            return f"unreachable (no answer in {CHECK_SECONDS:g} s)"
        if current != SCHEMA_HEAD:
            return f"schema at revision {current}, this mailgate needs {SCHEMA_HEAD}"
        return None

    async def aclose(self) -> None:
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        self._close_loop_connection()
        if self.engine is not None:
            await self.engine.dispose()
        if self._sqlite is not None and self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite.dispose)
            self._thread.shutdown(wait=False)
        if self._readers is not None:
            self._readers.shutdown(wait=False)


_SQLITE_HEADER = b"SQLite format 3\x00"  #: the first 16 bytes of every SQLite 3 database


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL opens; None for an in-memory or URI-named database."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def _file_problem(path: str, opened: tuple[int, int]) -> str | None:
    """Why the SQLite file at ``path`` is not the database opened as ``opened``, or
    cannot be written to."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"unreachable (database file: {exc.strerror})"
    if (st.st_dev, st.st_ino) != opened:
        return "unreachable (the database file was replaced after it was opened)"
    if header != _SQLITE_HEADER:
        return "unreachable (the database file is no longer an SQLite database)"
    try:  # opened for writing, nothing written: new connections open it the same way
        os.close(os.open(path, os.O_RDWR))
    except OSError as exc:  # made read-only (chmod, a read-only mount): every write fails
        return f"read-only (database file: {exc.strerror})"
    return None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise database failures as :class:`StoreError`, chained to the original.

    Unreachable, dropped or locked databases (driver ``OSError``s such as a refused
    connection, ``OperationalError``, ``InterfaceError``, an invalidated connection,
    a pool time-out, a PostgreSQL server starting up, shutting down or out of
    connections) become :class:`StoreUnavailable`: worth retrying later. Other
    driver errors (``IntegrityError``, ``DataError``, ``ProgrammingError``) mean the
    statement itself is wrong and become plain :class:`StoreError`. Anything else,
    mailgate's own exceptions included, passes through unchanged.
    """
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        unavailable = (
            exc.connection_invalidated
            or isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
            or _server_unavailable(exc.orig)
        )
        kind = StoreUnavailable if unavailable else StoreError
        raise kind(f"database error: {exc.orig!r}") from exc
    except sqlite3.Error as exc:  # the driver's own, from statements run on its cursor
        unavailable = isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError)
        raise (StoreUnavailable if unavailable else StoreError)(f"database error: {exc!r}") from exc
    except (OSError, sqlalchemy.exc.TimeoutError) as exc:
        raise StoreUnavailable(f"database unreachable: {exc!r}") from exc


#: SQLSTATE classes of a PostgreSQL server that cannot serve now, whatever the statement:
#: connection exception, insufficient resources (too many connections, disk full),
#: operator intervention (shutting down, starting up, terminated), system error (I/O)
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})


def _server_unavailable(orig: BaseException | None) -> bool:
    """Whether PostgreSQL refused for a passing reason (by the error's SQLSTATE class).

    SQLAlchemy's asyncpg layer raises such refusals as a plain ``DBAPIError`` (asyncpg's
    ``CannotConnectNowError``, ``TooManyConnectionsError``, ``AdminShutdownError`` are no
    ``OperationalError`` there), so the class alone made a server that is starting up,
    shutting down or full of connections look like a bug: the API answered 500.
    """
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide when transactions begin (SQLAlchemy's
    # documented recipe for pysqlite), so _sqlite_begin can choose the BEGIN.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # WAL: readers never block the writer; NORMAL is durable across app crashes
    # (a power cut can lose the last commits, not corrupt the file).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_write(engine: Engine) -> Connection:
    """A pooled connection in a write transaction (``BEGIN IMMEDIATE``, which may wait
    up to ``busy_timeout`` for another process's writer)."""
    conn = engine.connect()
    try:
        conn.execution_options(mailgate_write=True)
        conn.begin()
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: Connection) -> None:
    conn.close()  # rolls back what it began


def _commit(conn: Connection) -> None:
    try:
        conn.commit()
    finally:
        conn.close()


class _Busy(Exception):
    """Another connection holds the SQLite file's write lock."""


def _sqlite_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    if options.get("mailgate_manual", False):  # Database._on_loop's: its BEGIN is issued
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("mailgate_write", False) else "BEGIN")


#: The newest revision in ``migrations/versions`` (a test checks it against Alembic's
#: head). A store already there is opened without importing Alembic at all: it is
#: about 10 MiB of a process's memory that only a migration needs.
SCHEMA_HEAD = "0014"


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mailgate.store") / "migrations"))
    return cfg


async def _migrate(conn: StoreConnection) -> None:
    if await conn.run_sync(_revision) != SCHEMA_HEAD:
        await conn.run_sync(_upgrade)


def _revision(conn: Connection) -> str | None:
    """The store's schema revision; None for a store Alembic has not touched."""
    if not sqlalchemy.inspect(conn).has_table("alembic_version"):
        return None
    version: str | None = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return version


def _upgrade(conn: Connection) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
