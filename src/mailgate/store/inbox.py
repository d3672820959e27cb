"""Captured mail: what the capture server and the capture transport keep."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.util import await_only

from mailgate.errors import NotFound
from mailgate.store.database import Database
from mailgate.store.group_commit import GroupCommit
from mailgate.store.inbox_search import matching
from mailgate.store.outbox import EventKind, event_row, write_events
from mailgate.store.prepared import Prepared, sqlite_driver
from mailgate.store.schema import inbox, inbox_raw, sanitize_text

if TYPE_CHECKING:
    from mailgate.inbox.search import Term

__all__ = ["BoxCount", "CapturedRecord", "InboxStore", "RawFile"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CapturedRecord:
    id: str
    tenant: str
    source: str
    received_at: datetime
    remote_addr: str | None
    helo: str | None
    mail_from: str
    rcpt_to: list[str]
    auth: dict[str, Any] | None
    subject: str
    from_header: str
    to_header: str
    headers: dict[str, Any]
    text: str | None
    html: str | None
    attachments: list[dict[str, Any]]
    size: int
    box: str = "default"  #: the inbox it was sorted into (inbox.sort_by)
    read: bool = False
    tags: list[str] = field(default_factory=list)
    message_id: str | None = None  #: the Message-ID header, without angle brackets


@dataclass(frozen=True, slots=True)
class BoxCount:
    """One inbox of a tenant and how much mail it holds."""

    name: str
    total: int
    unread: int


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many of one inbox's messages retention deleted."""

    tenant: str
    box: str
    count: int


_SUMMARY = list(inbox.c)  #: a message's row: everything but its bytes (in ``inbox_raw``)


def _received(r: CapturedRecord) -> dict[str, Any]:
    """The outbox event of captured mail: its envelope and summary, never its content."""
    summary = {
        "mail_from": r.mail_from,
        "rcpt_to": r.rcpt_to,
        "subject": r.subject,
        "from": r.from_header,
        "to": r.to_header,
        "size": r.size,
        "attachments": len(r.attachments),
    }
    return event_row(
        EventKind.INBOX_RECEIVED, summary, r.received_at,
        tenant=r.tenant, source=r.source, inbox_id=r.id,
    )  # fmt: skip


class InboxStore:
    def __init__(
        self,
        db: Database,
        *,
        max_messages: int = 0,
        box_max_messages: Mapping[str, int] | None = None,
    ) -> None:
        """``max_messages``: kept per inbox of a tenant, or ``box_max_messages[box]`` for
        a box named there; each commit of new ones deletes that inbox's oldest past it,
        in the same transaction (0: no limit)."""
        self.db = db
        self.max_messages = max_messages
        self.box_max_messages = dict(box_max_messages or {})
        self._writer = GroupCommit(db, self._insert_many, small=_small)

    async def add(self, record: CapturedRecord, raw: bytes | RawFile) -> int:
        """Commit one captured message; concurrent adds share a transaction. Returns how
        many of its inbox's oldest went to make room (counted on one message of each
        inbox in the shared transaction, 0 on the others). ``raw`` may be a file
        (:class:`RawFile`): it is copied into the row a block at a time, as are bytes
        past a block."""
        return await self._writer.submit((record, raw))

    def _insert_many(
        self, conn: Connection, items: Sequence[tuple[CapturedRecord, bytes | RawFile]]
    ) -> list[int]:
        _INSERT.run(conn, [_row(record) for record, _ in items])
        whole, in_blocks = [], []
        for record, raw in items:
            if _by_blocks(raw):
                in_blocks.append((record.id, raw))
            else:
                whole.append({"id": record.id, "raw": _bytes(raw)})
        _INSERT_RAW.run(conn, whole)
        if in_blocks:
            driver = sqlite_driver(conn)
            for capture_id, raw in in_blocks:
                if driver is not None:
                    _copy_in(driver, capture_id, raw)
                else:
                    _copy_in_postgres(conn, capture_id, raw)
        write_events(conn, [_received(record) for record, _ in items])
        pruned = [0] * len(items)
        first: dict[tuple[str, str], int] = {}  # each inbox, at its first message
        for i, (record, _) in enumerate(items):
            first.setdefault((record.tenant, record.box), i)
        bounded = {key: i for key, i in first.items() if self._keep(key[1])}
        if sqlite_driver(conn) is None:
            _lock_inboxes(conn, sorted(bounded))
        for (tenant, box), i in bounded.items():
            pruned[i] = _keep_newest(conn, tenant, box, self._keep(box))
        return pruned

    def _keep(self, box: str) -> int:
        return self.box_max_messages.get(box, self.max_messages)

    async def prune_older(
        self, cutoff: datetime | None, *, box_cutoffs: Mapping[str, datetime | None] | None = None
    ) -> tuple[Pruned, ...]:
        """Delete what was captured before ``cutoff``, or ``box_cutoffs[box]`` in a box
        named there (None: kept however old); how many of each inbox, in one
        transaction."""
        c = inbox.c
        box_cutoffs = box_cutoffs or {}
        rules = [(c.box == box, at) for box, at in box_cutoffs.items() if at is not None]
        if cutoff is not None:
            rules.append((c.box.not_in(list(box_cutoffs)), cutoff))
        if not rules:
            return ()
        old = or_(*(and_(in_box, c.received_at < at) for in_box, at in rules))
        counted = select(c.tenant, c.box, func.count()).where(old).group_by(c.tenant, c.box)
        async with self.db.write() as conn:
            counts = (await conn.execute(counted)).all()
            if counts:
                await conn.execute(delete(inbox).where(old))
        return tuple(Pruned(tenant, box, n) for tenant, box, n in counts)

    async def list(
        self,
        tenant: str,
        *,
        box: str | None = None,
        query: Sequence[Term] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[CapturedRecord], str | None]:
        """Newest first, of one inbox (``box``) or all; what every term of ``query``
        matches (:mod:`mailgate.store.inbox_search`). Returns the page and the cursor
        of the next one (None on the last page)."""
        c = inbox.c
        stmt = (
            select(*_SUMMARY)
            .where(_scope(tenant, box), matching(query))
            .order_by(c.id.desc())
            .limit(limit + 1)
        )
        if cursor:
            stmt = stmt.where(c.id < cursor)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        records = [_record(r) for r in rows[:limit]]
        return records, (records[-1].id if len(rows) > limit else None)

    async def get(
        self, capture_id: str, tenant: str, *, box: str | None = None, mark_read: bool = False
    ) -> CapturedRecord:
        """One captured message; with ``mark_read`` it is read from now on (Mailpit marks
        a message read when it is opened) and returned as read."""
        where = (inbox.c.id == capture_id, _scope(tenant, box))
        async with self.db.read() as conn:
            row = (await conn.execute(select(*_SUMMARY).where(*where))).mappings().one_or_none()
        if row is None:
            raise NotFound(f"no captured message {capture_id}")
        record = _record(row)
        if mark_read and not record.read:
            async with self.db.write() as conn:
                await conn.execute(update(inbox).where(*where).values(read=True))
            record = replace(record, read=True)
        return record

    async def update(
        self,
        capture_id: str,
        tenant: str,
        *,
        box: str | None = None,
        read: bool | None = None,
        tags: Sequence[str] | None = None,
    ) -> CapturedRecord:
        """Set read/unread and replace the tags (each when given; ``tags`` already clean)."""
        values: dict[str, Any] = {}
        if read is not None:
            values["read"] = read
        if tags is not None:
            values["tags"] = list(tags)
        if values:
            async with self.db.write() as conn:
                result = await conn.execute(
                    update(inbox)
                    .where(inbox.c.id == capture_id, _scope(tenant, box))
                    .values(**values)
                )
            if not result.rowcount:
                raise NotFound(f"no captured message {capture_id}")
        return await self.get(capture_id, tenant, box=box)

    async def boxes(self, tenant: str) -> tuple[BoxCount, ...]:
        """The tenant's inboxes that hold mail, by name, with total and unread counts."""
        c = inbox.c
        unread = func.sum(case((c.read.is_(False), 1), else_=0))
        stmt = (
            select(c.box, func.count(), unread)
            .where(c.tenant == tenant)
            .group_by(c.box)
            .order_by(c.box)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return tuple(BoxCount(name, int(total), int(unread or 0)) for name, total, unread in rows)

    async def raw(self, capture_id: str, tenant: str, *, head: int | None = None) -> bytes:
        """The message's bytes; only its first ``head`` octets when given (read by the
        database, not cut from the whole: a big message's header block or the start
        shown of it)."""
        async with self.db.read() as conn:
            if head is not None:
                raw = await conn.run_sync(_head, capture_id, tenant, head)
            else:
                raw = (
                    await conn.execute(_of_message(inbox_raw.c.raw, capture_id, tenant))
                ).scalar_one_or_none()
        if raw is None:
            raise NotFound(f"no captured message {capture_id}")
        return bytes(raw)

    async def copy_raw(self, capture_id: str, tenant: str, into: BinaryIO) -> None:
        """Write the message's bytes into ``into`` a block at a time, never whole in
        memory (a download of a big message): SQLite's blob I/O in a reading thread,
        PostgreSQL's ``substring``. NotFound when it is not (or no longer) there."""
        async with self.db.read() as conn:
            found = await conn.run_sync(_copy_out, capture_id, tenant, into)
        if not found:
            raise NotFound(f"no captured message {capture_id}")

    async def delete(self, capture_id: str, tenant: str, *, box: str | None = None) -> None:
        """Delete one captured message (only if it is in ``box``, when given)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(inbox).where(inbox.c.id == capture_id, _scope(tenant, box))
            )
        if not result.rowcount:
            raise NotFound(f"no captured message {capture_id}")

    async def clear(
        self, tenant: str | None, *, box: str | None = None, query: Sequence[Term] = ()
    ) -> int:
        """Delete a tenant's captured mail (every tenant's with ``None``), only one inbox's
        with ``box``, only what ``query`` matches; returns how many."""
        stmt = delete(inbox).where(matching(query))
        if tenant is not None:
            stmt = stmt.where(_scope(tenant, box))
        async with self.db.write() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount)

    async def count(self) -> int:
        """Captured messages kept, all tenants together (for the start-up line)."""
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(inbox))).scalar_one())

    async def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are still kept, any tenant's (the attachment file sweep asks:
        a message may have gone by delete, clear, max_messages or max_age)."""
        found: set[str] = set()
        async with self.db.read() as conn:
            for start in range(0, len(ids), _IN_BATCH):
                batch = ids[start : start + _IN_BATCH]
                stmt = select(inbox.c.id).where(inbox.c.id.in_(batch))
                found.update((await conn.execute(stmt)).scalars())
        return found


_IN_BATCH = 500  #: ids in one IN (...): under SQLite's old limit of 999 bound parameters


def _scope(tenant: str, box: str | None) -> ColumnElement[bool]:
    """A tenant's mail, or one of its inboxes' (through the (tenant, box, id) index)."""
    if box is None:
        return inbox.c.tenant == tenant
    return and_(inbox.c.tenant == tenant, inbox.c.box == box)


#: captured bytes in one commit past which it goes to the database thread: below it,
#: copying the rows into SQLite's pages takes less than the hand-off there and back
SMALL_BATCH_BYTES = 256 * 1024


def _small(items: Sequence[tuple[CapturedRecord, bytes | RawFile]]) -> bool:
    return sum(raw.size if isinstance(raw, RawFile) else len(raw) for _, raw in items) <= (
        SMALL_BATCH_BYTES
    )


@dataclass(frozen=True, slots=True)
class RawFile:
    """A captured message's raw bytes in a file (a DATA block spooled to disk)."""

    path: Path
    size: int


_BLOCK = 1024 * 1024  #: octets copied from a spooled message into its row at a time


def _bytes(raw: bytes | RawFile) -> bytes:
    """The message's bytes, to be bound whole: a small message's."""
    return raw if isinstance(raw, bytes) else raw.path.read_bytes()


def _by_blocks(raw: bytes | RawFile) -> bool:
    """Whether ``raw`` goes in a block at a time: a file always (never read whole); bytes
    past a block, which bound whole SQLite would copy twice (the bound value, then its
    record) and asyncpg once more into its output buffer."""
    return isinstance(raw, RawFile) or len(raw) > _BLOCK


def _copy_in(driver: sqlite3.Connection, capture_id: str, raw: bytes | RawFile) -> None:
    """Store the message's bytes a block at a time (SQLite's incremental blob I/O into a
    zeroblob, which SQLite leaves unwritten as the last column of ``inbox_raw``): from a
    file, the message is never whole in memory; from bytes, never copied. Runs in the
    database thread."""
    size = raw.size if isinstance(raw, RawFile) else len(raw)
    cursor = driver.execute(
        "INSERT INTO inbox_raw (id, raw) VALUES (?, zeroblob(?))", (capture_id, size)
    )
    rowid = cursor.lastrowid
    assert rowid is not None
    with driver.blobopen("inbox_raw", "raw", rowid) as blob:
        if isinstance(raw, bytes):
            view = memoryview(raw)
            for start in range(0, size, _BLOCK):
                blob.write(view[start : start + _BLOCK])
            return
        with raw.path.open("rb") as source:
            while block := source.read(_BLOCK):
                blob.write(block)


def _copy_in_postgres(conn: Connection, capture_id: str, raw: bytes | RawFile) -> None:
    """Store the message's bytes on PostgreSQL by ``COPY … FROM STDIN`` in its binary
    format, which sends one field as a length and then its octets in as many messages as
    it takes: a block at a time from the file (read in a thread) or from the bytes, in
    the open transaction. Bound as a parameter, the value would be whole in memory and
    copied again by asyncpg. Runs in ``run_sync``'s greenlet, which may await."""
    size = raw.size if isinstance(raw, RawFile) else len(raw)
    driver = conn.connection.driver_connection
    assert driver is not None  # an open connection's asyncpg connection
    rows = _copy_rows(capture_id.encode(), size, raw)
    await_only(
        driver.copy_to_table(
            inbox_raw.name, schema_name=inbox_raw.schema, source=rows,
            columns=["id", "raw"], format="binary",
        )
    )  # fmt: skip


_COPY_HEADER = b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0)  #: flags, no extension
_COPY_TRAILER = struct.pack("!h", -1)


async def _copy_rows(capture_id: bytes, size: int, raw: bytes | RawFile) -> AsyncIterator[bytes]:
    """One row of ``(id, raw)`` in COPY's binary format (PostgreSQL's "COPY", File
    Formats): a field is its length (int32) and its octets, text as UTF-8."""
    yield _COPY_HEADER + struct.pack("!hi", 2, len(capture_id)) + capture_id
    yield struct.pack("!i", size)
    if isinstance(raw, bytes):
        view = memoryview(raw)
        for start in range(0, size, _BLOCK):
            yield bytes(view[start : start + _BLOCK])
    else:
        with raw.path.open("rb") as source:
            left = size  # the length told: a file that grew is read no further
            while left and (block := await asyncio.to_thread(source.read, min(left, _BLOCK))):
                left -= len(block)
                yield block
    yield _COPY_TRAILER


def _copy_out(conn: Connection, capture_id: str, tenant: str, into: BinaryIO) -> bool:
    """:meth:`InboxStore.copy_raw` on the connection (SQLite: in its thread; PostgreSQL:
    in ``run_sync``'s greenlet, which may await). False when there is no such message."""
    driver = sqlite_driver(conn)
    if driver is not None:
        return _read_blob(driver, capture_id, tenant, lambda blob: _drain(blob, into)) is not None
    mine = inbox_raw.c.id == capture_id
    size = conn.execute(
        _of_message(func.length(inbox_raw.c.raw), capture_id, tenant)
    ).scalar_one_or_none()
    if size is None:
        return False
    for start in range(0, size, _BLOCK):  # bytea is stored uncompressed: see 0012
        part = conn.execute(
            select(func.substring(inbox_raw.c.raw, start + 1, _BLOCK)).where(mine)
        ).scalar_one_or_none()
        if part is None:
            return False
        await_only(asyncio.to_thread(into.write, part))
    return True


def _head(conn: Connection, capture_id: str, tenant: str, size: int) -> bytes | None:
    """The message's first ``size`` octets: on SQLite by blob I/O (its ``substr`` reads
    the whole value first: 68 MiB for a header block), on PostgreSQL by ``substr`` (of
    ``bytea`` stored uncompressed, which reads only the pages it needs)."""
    driver = sqlite_driver(conn)
    if driver is None:
        return conn.execute(
            _of_message(func.substr(inbox_raw.c.raw, 1, size), capture_id, tenant)
        ).scalar_one_or_none()
    return _read_blob(driver, capture_id, tenant, lambda blob: blob.read(size))


def _of_message(value: ColumnElement[Any], capture_id: str, tenant: str) -> Select[Any]:
    """``value`` of a message's bytes (``inbox_raw``), when it is the tenant's."""
    return (
        select(value)
        .join(inbox, inbox.c.id == inbox_raw.c.id)
        .where(inbox_raw.c.id == capture_id, inbox.c.tenant == tenant)
    )


def _read_blob(
    driver: sqlite3.Connection, capture_id: str, tenant: str, read: Callable[[sqlite3.Blob], T]
) -> T | None:
    """``read`` of the message's bytes by SQLite's blob I/O (in the database thread);
    None when there is no such message, or it went while it was read."""
    row = driver.execute(_ROWID, (capture_id, tenant)).fetchone()
    if row is None:
        return None
    try:
        with driver.blobopen("inbox_raw", "raw", row[0], readonly=True) as blob:
            return read(blob)
    except sqlite3.OperationalError:  # the row went while it was read
        return None


def _drain(blob: sqlite3.Blob, into: BinaryIO) -> bool:
    while block := blob.read(_BLOCK):
        into.write(block)
    return True


_ROWID = (
    "SELECT inbox_raw.rowid FROM inbox_raw JOIN inbox ON inbox.id = inbox_raw.id"
    " WHERE inbox_raw.id = ? AND inbox.tenant = ?"
)


def _lock_inboxes(conn: Connection, boxes: Sequence[tuple[str, str]]) -> None:
    """On PostgreSQL, take each inbox's lock until the transaction ends, in one order
    (no deadlock), before pruning it. Two processes committing new mail to one inbox
    at once each counted the other's uncommitted rows out (READ COMMITTED), and both
    kept ``keep`` with their own: one more than ``max_messages``. The second now prunes
    once the first has committed, with a snapshot that holds its rows."""
    for tenant, box in boxes:
        name = sanitize_text(f"mailgate inbox {len(tenant)}:{tenant}{box}")
        conn.execute(_INBOX_LOCK, {"name": name})


_INBOX_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))")


def _keep_newest(conn: Connection, tenant: str, box: str, keep: int) -> int:
    """Delete one inbox's captured mail past its ``keep`` newest (ids are UUIDv7: in
    the order of capture), through the (tenant, box, id) index; another inbox's mail
    is never counted nor touched."""
    mine = (inbox.c.tenant == tenant, inbox.c.box == box)
    oldest_kept = (
        select(inbox.c.id)
        .where(*mine)
        .order_by(inbox.c.id.desc())
        .offset(keep - 1)
        .limit(1)
        .scalar_subquery()
    )
    return int(conn.execute(delete(inbox).where(*mine, inbox.c.id < oldest_kept)).rowcount)


_INSERT = Prepared(insert(inbox), [c.key for c in inbox.c])  #: _row gives every column
_INSERT_RAW = Prepared(insert(inbox_raw), ["id", "raw"])


def _row(r: CapturedRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "tenant": r.tenant,
        "source": r.source,
        "received_at": r.received_at,
        "remote_addr": r.remote_addr,
        "helo": r.helo,
        "mail_from": r.mail_from,
        "rcpt_to": r.rcpt_to,
        "auth": r.auth,
        "subject": r.subject,
        "from_header": r.from_header,
        "to_header": r.to_header,
        "headers": r.headers,
        "text_body": r.text,
        "html_body": r.html,
        "attachments": r.attachments,
        "size": r.size,
        "box": r.box,
        "read": r.read,
        "tags": r.tags,
        "message_id": r.message_id,
    }


def _record(row: RowMapping) -> CapturedRecord:
    return CapturedRecord(
        id=row["id"],
        tenant=row["tenant"],
        source=row["source"],
        received_at=row["received_at"],
        remote_addr=row["remote_addr"],
        helo=row["helo"],
        mail_from=row["mail_from"],
        rcpt_to=row["rcpt_to"],
        auth=row["auth"],
        subject=row["subject"],
        from_header=row["from_header"],
        to_header=row["to_header"],
        headers=row["headers"],
        text=row["text_body"],
        html=row["html_body"],
        attachments=row["attachments"],
        size=row["size"],
        box=row["box"],
        read=bool(row["read"]),
        tags=row["tags"],
        message_id=row["message_id"],
    )
