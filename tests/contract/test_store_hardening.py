"""Issue 5, items 10 and 11: one bad value or one extra process must not break the store.

* Text PostgreSQL cannot hold (NUL, lone surrogates) is sanitised on its way in,
  on every engine, so one poisoned reply or subject never fails a group commit.
* Two submissions with one idempotency key, from two engines (as two processes
  would), yield one row and one id.
* Lease owners fit their column whatever the host is called.
* Database failures reach mailgate as :class:`StoreError`, never as SQLAlchemy types.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy import func, insert, select

from mailgate.errors import StoreError, StoreUnavailable
from mailgate.ids import new_lease_owner
from mailgate.model import Attempt, Outcome, RecipientResult, State
from mailgate.policy import Decision
from mailgate.store import CapturedRecord, Database, InboxStore, QueueStore
from mailgate.store import database as database_module
from mailgate.store.schema import attempts, events, messages, sanitize_json, sanitize_text
from tests.builders import NOW, make_message
from tests.integration.conftest import fresh_postgres_database

POISON = "bad\x00reply \ud800 end"  # NUL and a lone surrogate: PostgreSQL/UTF-8 refuse both
CLEAN = "bad\ufffdreply \ufffd end"


# -- sanitising (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain ascii", "plain ascii"),
        ("naïve 日本 😀", "naïve 日本 😀"),
        ("a\x00b\x00", "a\ufffdb\ufffd"),
        ("\ud800x", "\ufffdx"),
        ("x\udfff", "x\ufffd"),
        ("\ud83d\ude00", "😀"),  # a well-formed surrogate pair is the character it encodes
        (POISON, CLEAN),
    ],
)
def test_sanitize_text_replaces_what_utf8_cannot_carry(raw: str, clean: str) -> None:
    assert sanitize_text(raw) == clean
    clean.encode("utf-8")  # always encodable afterwards


def test_sanitize_text_returns_clean_strings_unchanged() -> None:
    s = "x" * 1000 + "é"
    assert sanitize_text(s) is s  # the fast path allocates nothing


def test_sanitize_json_walks_keys_values_and_lists() -> None:
    value = {"k\x00": ["a\x00", {"\ud800": "v\udc00"}, 1, None, True, 2.5]}
    assert sanitize_json(value) == {
        "k\ufffd": ["a\ufffd", {"\ufffd": "v\ufffd"}, 1, None, True, 2.5]
    }


# -- the queue --------------------------------------------------------------------------


async def test_poisoned_text_is_stored_sanitised(database: Database) -> None:
    queue = QueueStore(database)
    m = make_message(
        subject=POISON,
        text=POISON,
        html=POISON,
        headers={"X-Poison": POISON},
        metadata={POISON: [POISON]},
    )
    await queue.enqueue([m], NOW)
    record = await queue.get(m.id, "default")
    assert record.subject == CLEAN and record.metadata == {CLEAN: [CLEAN]}
    [job] = await queue.lease(new_lease_owner(), NOW, 1, 60)
    assert job.message.text == CLEAN and job.message.headers == {"X-Poison": CLEAN}


async def test_one_poisoned_reply_does_not_fail_the_other_outcomes(database: Database) -> None:
    """Item 10: a NUL in one upstream reply failed the whole group commit, and every
    innocent message in it was delivered again."""
    queue = QueueStore(database)
    await queue.enqueue([make_message() for _ in range(16)], NOW)
    jobs = await queue.lease("w1", NOW, 16, 60)
    assert len(jobs) == 16
    texts = ["250 ok"] * 16
    texts[7] = "250 " + POISON
    kept = await asyncio.gather(
        *(
            queue.record(job, "w1", _attempt(text), Decision(State.SENT, (), 1, None))
            for job, text in zip(jobs, texts, strict=True)
        )
    )
    assert kept == [True] * 16
    assert await queue.count_by_state() == {"sent": 16}  # none left SENDING
    async with database.read() as conn:
        recorded = (await conn.execute(select(attempts.c.message_id, attempts.c.text))).all()
        assert (await conn.execute(select(func.count()).select_from(events))).scalar() == 32
    assert sorted(m for m, _ in recorded) == sorted(j.message.id for j in jobs)  # once each
    poisoned = await queue.get(jobs[7].message.id, "default")
    assert poisoned.attempts[0].text == "250 " + CLEAN
    assert poisoned.attempts[0].recipients["a@example.com"].text == CLEAN


# -- the inbox --------------------------------------------------------------------------


async def test_poisoned_capture_does_not_fail_concurrent_captures(database: Database) -> None:
    """Item 10: a NUL in one subject made 38 of 55 concurrent SMTP sessions get 451."""
    store = InboxStore(database)
    records = [_capture(i, "hello") for i in range(12)]
    records[5] = _capture(5, POISON)
    await asyncio.gather(*(store.add(r, b"raw\x00bytes are fine") for r in records))
    page, _ = await store.list("default", limit=50)
    assert len(page) == 12
    poisoned = await store.get(records[5].id, "default")
    assert poisoned.subject == CLEAN and poisoned.text == CLEAN and poisoned.html == CLEAN
    assert poisoned.headers == {"Subject": CLEAN, CLEAN: CLEAN}
    assert poisoned.auth == {"mechanism": "PLAIN", "username": CLEAN}
    assert poisoned.mail_from == CLEAN and poisoned.rcpt_to == [CLEAN]
    assert await store.raw(records[5].id, "default") == b"raw\x00bytes are fine"  # bytes as sent
    assert (await store.get(records[4].id, "default")).subject == "hello"


def _capture(i: int, text: str) -> CapturedRecord:
    return CapturedRecord(
        id=f"01900000-0000-7000-8000-{i:012d}",
        tenant="default",
        source="smtp",
        received_at=NOW,
        remote_addr="127.0.0.1:1",
        helo=text,
        mail_from=text,
        rcpt_to=[text],
        auth={"mechanism": "PLAIN", "username": text},
        subject=text,
        from_header=text,
        to_header=text,
        headers={"Subject": text, text: text},
        text=text,
        html=text,
        attachments=[{"filename": text, "size": 1}],
        size=3,
    )


# -- idempotency across engines ---------------------------------------------------------


async def test_same_key_from_two_engines_at_once_yields_one_message(
    store_url: str, database: Database
) -> None:
    """Item 11a: the loser of the race got a 500 (IntegrityError) on PostgreSQL."""
    other = Database(store_url)
    queues = [QueueStore(database), QueueStore(other)]
    try:
        for round_ in range(15):
            key = f"order-{round_}"
            pair = [make_message(key=key, attachments=()) for _ in range(2)]
            results = await asyncio.gather(
                *(q.enqueue([m], NOW) for q, m in zip(queues, pair, strict=True))
            )
            ids = {r.id for [r] in results}
            assert len(ids) == 1 and sorted(r.duplicate for [r] in results) == [False, True]
    finally:
        await other.aclose()
    async with database.read() as conn:
        rows = (
            await conn.execute(select(messages.c.key, func.count()).group_by(messages.c.key))
        ).all()
        queued = (await conn.execute(select(func.count()).select_from(events))).scalar()
    assert sorted(rows) == sorted((f"order-{i}", 1) for i in range(15))
    assert queued == 15  # the loser wrote no event either


# -- lease owners -----------------------------------------------------------------------


async def test_lease_owner_fits_the_column_for_any_hostname(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 11c: ``hostname:pid:hex`` overflowed String(64) on Kubernetes-style hosts."""
    monkeypatch.setattr(socket, "gethostname", lambda: "pod-" + "x" * 249)
    owners = {new_lease_owner() for _ in range(100)}
    assert len(owners) == 100  # unique per dispatcher
    assert {len(o) for o in owners} == {16}  # fixed size, well inside the column
    assert messages.c.lease_owner.type.compile(database.dialect) == "VARCHAR(64)"
    queue = QueueStore(database)
    await queue.enqueue([make_message()], NOW)
    owner = owners.pop()
    [job] = await queue.lease(owner, NOW, 1, 60)
    assert await queue.record(job, owner, _attempt("250 ok"), Decision(State.SENT, (), 1, None))


# -- database errors become mailgate errors --------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_unreachable_database_raises_store_unavailable(engine: str, tmp_path: Path) -> None:
    url = (
        f"sqlite:///{tmp_path / 'missing-dir' / 'x.sqlite3'}"
        if engine == "sqlite"
        else f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"
    )
    db = Database(url)
    try:
        write_error = await _unavailable(db)
    finally:
        await db.aclose()
    assert isinstance(write_error.__cause__, (sqlalchemy.exc.DBAPIError, OSError))


async def _unavailable(db: Database) -> StoreUnavailable:
    """A queue write and a read each raise StoreUnavailable; the write's."""
    with pytest.raises(StoreUnavailable) as write_error:
        await QueueStore(db).enqueue([make_message()], NOW)
    with pytest.raises(StoreUnavailable):
        await QueueStore(db).get("x", "default")
    return write_error.value


async def test_constraint_violation_raises_store_error(database: Database) -> None:
    row = {"message_id": "m", "kind": "k", "payload": {}, "created_at": NOW, "id": 1}
    with pytest.raises(StoreError) as info:
        async with database.write() as conn:
            await conn.execute(insert(events), [row, row])
    assert not isinstance(info.value, StoreUnavailable)
    assert isinstance(info.value.__cause__, sqlalchemy.exc.IntegrityError)


def _attempt(text: str) -> Attempt:
    return Attempt(
        NOW,
        "smtp:test",
        250,
        None,
        text,
        5,
        {"a@example.com": RecipientResult(Outcome.SENT, 250, text.removeprefix("250 "))},
    )


async def test_postgresql_refusing_connections_raises_store_unavailable(postgres_url: str) -> None:
    """A server that turns connections away for now (too many connections, as a fleet of
    ``serve`` processes meets ``max_connections``; starting up; shutting down) answers
    with an error SQLAlchemy's asyncpg layer raises as a plain ``DBAPIError``: it was a
    :class:`StoreError` (the API's 500), not a :class:`StoreUnavailable` (503, 451)."""
    role = f"mg_full_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    db = Database(postgres_url.replace("postgres@", f"{role}@", 1))
    try:
        write_error = await _unavailable(db)
    finally:
        await db.aclose()
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
    assert "too many connections" in str(write_error)


class _FreezingProxy:
    """A TCP relay to PostgreSQL that can stop passing bytes, both ways, keeping every
    connection open: a server frozen, or cut off by the network without a reset."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.flowing = asyncio.Event()  #: cleared: frozen
        self.flowing.set()
        self._tasks: set[asyncio.Task[object]] = set()

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, upstream_writer)),
            asyncio.ensure_future(self._pipe(upstream_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction; its end closes the other side (asyncpg's close waits for the
        server to hang up)."""
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


async def test_a_postgresql_that_stops_answering_is_unavailable_not_a_hang(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server frozen or cut off keeps its connections open and silent: a POST waited on
    it for ever (asyncpg sets no statement time-out, and the pool's ping has none). Each
    statement and each new connection is now bounded: the store says unavailable (503,
    451), and works again once the server answers, with no restart."""
    monkeypatch.setattr(database_module, "STATEMENT_SECONDS", 0.5)
    monkeypatch.setattr(database_module, "CONNECT_SECONDS", 0.5)
    url = await fresh_postgres_database(postgres_url, "mailgate_frozen_server")
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    relay = _FreezingProxy(port)
    async with relay as proxied:
        db = Database(url.replace(f":{port}/", f":{proxied}/", 1))
        try:
            await db.migrate()
            queue = QueueStore(db)
            await queue.enqueue([make_message(id="before")], NOW)
            async with asyncio.timeout(60):  # a guard against hanging the suite, not a bound
                relay.flowing.clear()
                await _unavailable(db)
                relay.flowing.set()
                await queue.enqueue([make_message(id="after")], NOW)
                assert (await queue.get("after", "default")).id == "after"
        finally:
            await db.aclose()


# -- a SQLite file removed or replaced under a running gateway ---------------------------


def _insert_event(conn: sqlalchemy.Connection) -> None:
    row = {"message_id": "m", "kind": "t", "payload": {}, "created_at": NOW}
    conn.execute(insert(events), [row])


@pytest.mark.parametrize("how", ["directory removed", "file replaced"])
async def test_a_write_to_a_sqlite_file_gone_from_its_path_is_not_acknowledged(
    tmp_path: Path, how: str
) -> None:
    """Connections already open went on committing to a file removed (its directory
    deleted) or replaced under them: every write succeeded, so the API answered 202 and
    SMTP 250 for messages no restart would see. Each write path now says unavailable."""
    home = tmp_path / "data"
    home.mkdir()
    path = home / "store.sqlite3"
    db = Database(f"sqlite:///{path}")
    try:
        await db.migrate()
        queue = QueueStore(db)
        await queue.enqueue([make_message()], NOW)  # every connection is open and warm
        await db.small_transaction(_insert_event)
        if how == "directory removed":
            shutil.rmtree(home)
        else:
            path.rename(tmp_path / "old.sqlite3")
            path.write_bytes((tmp_path / "old.sqlite3").read_bytes())
        with pytest.raises(StoreUnavailable):
            await queue.enqueue([make_message()], NOW)  # Database.transaction
        with pytest.raises(StoreUnavailable):
            await db.small_transaction(_insert_event)  # the capture server's group commit
        with pytest.raises(StoreUnavailable):
            async with db.write() as conn:
                await conn.execute(insert(events), {"message_id": "w", "kind": "t",
                                                    "payload": {}, "created_at": NOW})  # fmt: skip
    finally:
        await db.aclose()


async def test_readiness_of_a_database_that_never_answers_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PostgreSQL that takes the connection and stays silent (frozen, or cut off by the
    network) kept ``/readyz`` waiting for asyncpg's own 60 s connect time-out, and for
    ever on a connection already open: the check now gives up and says why."""
    monkeypatch.setattr(database_module, "CHECK_SECONDS", 0.2)
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # kept open, never written to

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    db = Database(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        async with asyncio.timeout(120):  # a guard against hanging the suite, not a bound
            problem = await db.check()
    finally:
        await db.aclose()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
    assert problem == "unreachable (no answer in 0.2 s)"
