"""Captured mail: what the capture server and the capture transport keep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select
from sqlalchemy.engine import RowMapping

from mailgate.errors import NotFound
from mailgate.store.database import Database
from mailgate.store.group_commit import GroupCommit
from mailgate.store.outbox import EventKind, event_row, write_events
from mailgate.store.schema import inbox

__all__ = ["CapturedRecord", "InboxStore"]


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


_SUMMARY = [c for c in inbox.c if c.name != "raw"]


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
    def __init__(self, db: Database, *, max_messages: int = 0) -> None:
        """``max_messages``: kept per tenant; each commit of new ones deletes the oldest
        past it, in the same transaction (0: no limit)."""
        self.db = db
        self.max_messages = max_messages
        self._writer = GroupCommit(db, self._insert_many)

    async def add(self, record: CapturedRecord, raw: bytes) -> None:
        """Commit one captured message; concurrent adds share a transaction."""
        await self._writer.submit((record, raw))

    def _insert_many(
        self, conn: Connection, items: Sequence[tuple[CapturedRecord, bytes]]
    ) -> list[None]:
        conn.execute(insert(inbox), [_row(record, raw) for record, raw in items])
        write_events(conn, [_received(record) for record, _ in items])
        if self.max_messages:
            for tenant in {record.tenant for record, _ in items}:
                _keep_newest(conn, tenant, self.max_messages)
        return [None] * len(items)

    async def prune_older(self, cutoff: datetime) -> int:
        """Delete what was captured before ``cutoff``; how many."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(inbox).where(inbox.c.received_at < cutoff))
        return int(result.rowcount)

    async def list(
        self, tenant: str, *, query: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[CapturedRecord], str | None]:
        """Newest first; ``query`` matches subject, From, To and the envelope sender.
        Returns the page and the cursor of the next one (None on the last page)."""
        c = inbox.c
        stmt = select(*_SUMMARY).where(c.tenant == tenant).order_by(c.id.desc()).limit(limit + 1)
        if cursor:
            stmt = stmt.where(c.id < cursor)
        if query:
            pattern = f"%{_escape_like(query)}%"
            stmt = stmt.where(
                or_(
                    *(
                        col.ilike(pattern, escape="\\")
                        for col in (c.subject, c.from_header, c.to_header, c.mail_from)
                    )
                )
            )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        records = [_record(r) for r in rows[:limit]]
        return records, (records[-1].id if len(rows) > limit else None)

    async def get(self, capture_id: str, tenant: str) -> CapturedRecord:
        async with self.db.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(*_SUMMARY).where(inbox.c.id == capture_id, inbox.c.tenant == tenant)
                    )
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound(f"no captured message {capture_id}")
        return _record(row)

    async def raw(self, capture_id: str, tenant: str) -> bytes:
        async with self.db.read() as conn:
            raw = (
                await conn.execute(
                    select(inbox.c.raw).where(inbox.c.id == capture_id, inbox.c.tenant == tenant)
                )
            ).scalar_one_or_none()
        if raw is None:
            raise NotFound(f"no captured message {capture_id}")
        return bytes(raw)

    async def delete(self, capture_id: str, tenant: str) -> None:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(inbox).where(inbox.c.id == capture_id, inbox.c.tenant == tenant)
            )
        if not result.rowcount:
            raise NotFound(f"no captured message {capture_id}")

    async def clear(self, tenant: str | None) -> int:
        """Delete a tenant's captured mail (every tenant's with ``None``); returns how many."""
        stmt = delete(inbox) if tenant is None else delete(inbox).where(inbox.c.tenant == tenant)
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


def _keep_newest(conn: Connection, tenant: str, keep: int) -> None:
    """Delete the tenant's captured mail past its ``keep`` newest (ids are UUIDv7: in
    the order of capture), through the (tenant, id) index."""
    oldest_kept = (
        select(inbox.c.id)
        .where(inbox.c.tenant == tenant)
        .order_by(inbox.c.id.desc())
        .offset(keep - 1)
        .limit(1)
        .scalar_subquery()
    )
    conn.execute(delete(inbox).where(inbox.c.tenant == tenant, inbox.c.id < oldest_kept))


def _row(r: CapturedRecord, raw: bytes) -> dict[str, Any]:
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
        "raw": raw,
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
    )
