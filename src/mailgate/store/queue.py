"""The message queue: enqueue, lease, record attempts, list, retry, cancel.

Leasing is the one place engines differ: PostgreSQL claims rows with
``FOR UPDATE SKIP LOCKED`` so several processes share the queue; on SQLite
the statement runs under the database's write lock, which serialises it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    Integer,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    or_,
    select,
    update,
)

from mailgate.errors import Conflict, NotFound
from mailgate.model import (
    Attachment,
    Attempt,
    Message,
    State,
)
from mailgate.policy import Decision
from mailgate.store.database import Database

if TYPE_CHECKING:
    from mailgate.store.database import StoreConnection
from mailgate.store.group_commit import GroupCommit
from mailgate.store.inbox_search import escape_like
from mailgate.store.leasing import Budget, WaitingAccounts, claim_due_ids
from mailgate.store.outbox import EventKind, event_row, kind_of_state, write_events
from mailgate.store.rows import (
    Enqueued,
    Job,
    MessageRecord,
    attempt_from_row,
    job_from_row,
    message_row,
    record_from_row,
)
from mailgate.store.schema import attachments, attempts, messages, sanitize_text, upsert
from mailgate.store.settle import Release, Settlement, record_many, release_many

__all__ = ["Activity", "Enqueued", "Job", "LastError", "MessageRecord", "QueueStore"]


@dataclass(frozen=True, slots=True)
class LastError:
    """An account's most recent failure or deferral (of the last 24 hours)."""

    at: datetime
    error: str
    message_id: str


@dataclass(frozen=True, slots=True)
class Activity:
    """What finished recently, for one tenant: the dashboard's figures."""

    sent_hour: int
    failed_hour: int
    sent_day: int
    failed_day: int
    per_minute: tuple[int, ...]  #: messages sent in each of the last 60 minutes, oldest first
    last_errors: dict[str, LastError]  #: by account


class QueueStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._recorder = GroupCommit(db, record_many)
        self._releaser = GroupCommit(db, release_many)
        self._waiting = WaitingAccounts()  #: accounts with mail waiting, for fair leases

    async def enqueue(self, batch: Sequence[Message], now: datetime) -> list[Enqueued]:
        """Commit a batch in one transaction; a known (tenant, key) returns the first id.

        Safe against a concurrent submission of the same key from another process:
        the insert skips a conflicting row instead of failing (``ON CONFLICT DO
        NOTHING``; PostgreSQL waits for the other transaction to settle first), and
        the winner's id is read back. Checking first and inserting second was not
        enough on PostgreSQL: both checks could pass, and the loser got an
        ``IntegrityError`` (a 500).

        Messages without a key cannot conflict (their ids are new UUIDv7s): they are
        written with one multi-row statement per table, a fixed statement SQLAlchemy
        compiles once, instead of a statement built and compiled per message.
        """
        duplicates = await self.db.transaction(_enqueue, batch, now)
        self._waiting.add((m.tenant, m.account) for m in batch)
        return [
            Enqueued(duplicates[m.id], duplicate=True)
            if m.id in duplicates
            else Enqueued(m.id, duplicate=False)
            for m in batch
        ]

    async def lease(
        self,
        owner: str,
        now: datetime,
        limit: int,
        lease_for: float,
        *,
        per_account: int | None = None,
        budget: Budget | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` due messages for ``owner`` until the lease expires.

        Due means queued/deferred with ``next_attempt_at`` passed, or ``sending``
        under a lease that expired (its dispatcher died). Fair across accounts: one
        account's backlog never holds back another's messages (round-robin, see
        :mod:`mailgate.store.leasing`); higher priority first within an account, and at
        most ``per_account`` from one account, or ``budget(tenant, account)`` where it
        says. Jobs come in the order to send them.
        """
        return await self.db.transaction(
            _lease, self._waiting, owner, now, limit, lease_for, per_account, budget
        )

    async def record(self, job: Job, owner: str, attempt: Attempt, decision: Decision) -> bool:
        """Write an attempt and its outcome; False if the lease was lost meanwhile.

        Outcomes that finish together share one transaction (group commit).
        """
        settled = Settlement(job.message.id, owner, attempt, decision, job.attempt_count + 1)
        return await self._recorder.submit(settled)

    async def release(
        self, job: Job, owner: str, until: datetime, reason: str, *, now: datetime
    ) -> bool:
        """Hand a leased message back unsent, due again at ``until``; False if the lease
        was lost meanwhile.

        Waiting is not trying (issue 6): a message held for its account or a rate limit
        keeps its attempt count and gets no attempt row; ``reason`` is shown as the
        message's ``wait_reason`` until it is sent or tried. It goes back to ``queued``
        if it was never tried, else ``deferred``. Releases that happen together share
        one transaction, like outcomes.
        """
        state = State.QUEUED if job.attempt_count == 0 else State.DEFERRED
        return await self._releaser.submit(
            Release(job.message.id, owner, state, until, reason, now)
        )

    async def renew(self, job: Job, owner: str, lease_for: float, *, now: datetime) -> bool:
        """Extend ``owner``'s lease on a message still being sent; False if it was lost.

        A send that outlives its lease would be leased again by another dispatcher and
        delivered twice; the dispatcher renews at half the lease (see ``deliver``).
        """
        c = messages.c
        async with self.db.write() as conn:
            result = await conn.execute(
                update(messages)
                .where(c.id == job.message.id, c.lease_owner == owner, c.state == State.SENDING)
                .values(lease_expires_at=now + timedelta(seconds=lease_for))
            )
        return bool(result.rowcount)

    async def wake_waiting(self, tenant: str, account: str, now: datetime) -> int:
        """Make the messages waiting for ``account`` due now (it was enabled or fixed).

        Without this they go at their next periodic re-check; returns how many woke.
        """
        c = messages.c
        waiting = and_(
            c.tenant == tenant,
            c.account == account,
            c.state.in_([State.QUEUED, State.DEFERRED]),
            c.wait_reason.is_not(None),
            c.next_attempt_at > now,
        )
        async with self.db.write() as conn:
            result = await conn.execute(
                update(messages).where(waiting).values(next_attempt_at=now, updated_at=now)
            )
        return int(result.rowcount)

    async def next_due(self) -> datetime | None:
        """The earliest time a queued or deferred message becomes due."""
        c = messages.c
        query = select(func.min(c.next_attempt_at)).where(
            c.state.in_([State.QUEUED, State.DEFERRED])
        )
        async with self.db.read() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        # func.min keeps the column's type, so this is already aware UTC.
        return value if isinstance(value, datetime) else None

    async def get(self, message_id: str, tenant: str | None) -> MessageRecord:
        """The message and its attempts; ``tenant`` None: whichever tenant's (the admin)."""
        mine = () if tenant is None else (messages.c.tenant == tenant,)
        async with self.db.read() as conn:
            row = (
                (await conn.execute(select(messages).where(messages.c.id == message_id, *mine)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound(f"no message {message_id}")
            tries = (
                (
                    await conn.execute(
                        select(attempts)
                        .where(attempts.c.message_id == message_id)
                        .order_by(attempts.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return replace(record_from_row(row), attempts=tuple(attempt_from_row(t) for t in tries))

    async def list(
        self,
        tenant: str | None,
        *,
        state: State | None = None,
        account: str | None = None,
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[MessageRecord], str | None]:
        """Newest first; pass the returned cursor to get the next page. ``tenant`` None:
        every tenant's (the admin UI). ``text``: an id or key, or a piece of the subject,
        sender or a To address, any case.

        Every filter walks the primary key newest first and stops after ``limit + 1``
        matches (tenant and state use ``ix_messages_tenant_state``): a page of a common
        match costs a page, never an offset; a rare text scans until it has found it."""
        c = messages.c
        query = select(messages).order_by(c.id.desc()).limit(limit + 1)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        if state is not None:
            query = query.where(c.state == state)
        if account is not None:
            query = query.where(c.account == account)
        if text:
            query = query.where(_text_matches(text))
        if cursor:
            query = query.where(c.id < cursor)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        records = [record_from_row(r) for r in rows[:limit]]
        return records, (records[-1].id if len(rows) > limit else None)

    async def content(self, message_id: str) -> tuple[str | None, str | None, bytes | None]:
        """The message's text and HTML bodies, and the source an SMTP client sent (None
        for any other): what a reader of one message needs, left out of lists."""
        c = messages.c
        query = select(c.text_body, c.html_body, c.raw).where(c.id == message_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"no message {message_id}")
        return row.text_body, row.html_body, row.raw

    async def retry(self, message_id: str, tenant: str, now: datetime) -> None:
        """Deferred or failed → queued, due now."""
        await self._transition(
            message_id, tenant, {State.DEFERRED, State.FAILED}, State.QUEUED, now
        )

    async def cancel(self, message_id: str, tenant: str, now: datetime) -> None:
        """Withdraw a message not yet sent. A message being sent right now cannot be."""
        await self._transition(
            message_id, tenant, {State.QUEUED, State.DEFERRED, State.FAILED}, State.CANCELLED, now
        )

    async def _transition(
        self, message_id: str, tenant: str, allowed: set[State], to: State, now: datetime
    ) -> None:
        c = messages.c
        async with self.db.write() as conn:
            found = (
                await conn.execute(
                    select(c.state, c.source).where(c.id == message_id, c.tenant == tenant)
                )
            ).one_or_none()
            if found is None:
                raise NotFound(f"no message {message_id}")
            state, source = found
            if state == to:
                return
            if state not in allowed:
                raise Conflict(f"message {message_id} is {state}; cannot become {to}")
            # queued again: due now, to the recipients still pending
            next_attempt_at = now if to is State.QUEUED else None
            values = {"state": to, "updated_at": now, "next_attempt_at": next_attempt_at}
            await conn.execute(update(messages).where(c.id == message_id).values(**values))
            event = event_row(
                kind_of_state(to), {"state": to}, now,
                tenant=tenant, source=source, message_id=message_id,
            )  # fmt: skip
            await conn.run_sync(write_events, [event])

    async def activity(self, tenant: str, now: datetime) -> Activity:
        """Sent and failed in the last hour and day, sent per minute over the last hour,
        and each account's last error of the day, from the index of what finished when
        (``ix_messages_state_updated``): the cost follows the day's mail, not the
        retention."""
        c = messages.c
        hour, day = now - timedelta(hours=1), now - timedelta(days=1)
        finished = (
            c.tenant == tenant,
            c.state.in_([State.SENT, State.FAILED]),
            c.updated_at >= day,
        )
        totals = (
            select(c.state, func.count().filter(c.updated_at >= hour), func.count())
            .where(*finished)
            .group_by(c.state)
        )
        async with self.db.read() as conn:
            counted = {str(s): (int(h), int(d)) for s, h, d in await conn.execute(totals)}
            minute = _minutes_since(conn, c.updated_at, hour)
            per_minute = (
                select(minute, func.count())
                .where(c.tenant == tenant, c.state == State.SENT, c.updated_at >= hour)
                .group_by(minute)
            )
            buckets = {int(m): int(n) for m, n in await conn.execute(per_minute)}
            ranked = (
                select(
                    c.account,
                    c.last_error,
                    c.updated_at,
                    c.id,
                    func.row_number()
                    .over(partition_by=c.account, order_by=c.updated_at.desc())
                    .label("n"),
                )
                .where(c.tenant == tenant, c.state.in_([State.FAILED, State.DEFERRED]))
                .where(c.updated_at >= day, c.last_error.is_not(None))
                .subquery()
            )
            latest = (await conn.execute(select(ranked).where(ranked.c.n == 1))).all()
        sent, failed = counted.get(State.SENT, (0, 0)), counted.get(State.FAILED, (0, 0))
        return Activity(
            sent_hour=sent[0],
            failed_hour=failed[0],
            sent_day=sent[1],
            failed_day=failed[1],
            per_minute=tuple(buckets.get(i, 0) for i in range(60)),
            last_errors={
                row.account: LastError(row.updated_at, row.last_error, row.id) for row in latest
            },
        )

    async def count_by_state(self, tenant: str | None = None) -> dict[str, int]:
        c = messages.c
        query = select(c.state, func.count()).group_by(c.state)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {str(state): int(n) for state, n in rows}

    async def client_refs(
        self, message_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, dict[str, Any]]]:
        """Each message's client key (the ``id`` it was submitted with) and metadata, by
        message id, for reports that hand them back; messages gone are left out."""
        c = messages.c
        query = select(c.id, c.key, c.meta).where(c.id.in_(list(message_ids)))
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {row.id: (row.key, row.meta) for row in rows}


def _text_matches(text: str) -> ColumnElement[bool]:
    """An id or key as given, or ``text`` inside the subject, sender or To (LIKE's own
    ``%`` and ``_`` taken literally). The pattern is cleaned as stored text is: the cast
    JSON of To is no :class:`SafeText` column, so a NUL bound raw was refused by
    PostgreSQL (the queue page's ``?q=%00`` was a 500) and ended SQLite's pattern there
    (it matched every message)."""
    c = messages.c
    text = sanitize_text(text)
    pattern = f"%{escape_like(text)}%"
    # To is JSON text, where a non-ASCII address is written escaped (zo\u00e9@…)
    in_to = f"%{escape_like(json.dumps(text)[1:-1])}%"
    return or_(
        c.id == text,
        c.key == text,
        c.subject.ilike(pattern, escape="\\"),
        c.sender.ilike(pattern, escape="\\"),
        cast(c.to_addrs, Text).ilike(in_to, escape="\\"),
    )


def _minutes_since(
    conn: StoreConnection, column: ColumnElement[datetime], start: datetime
) -> ColumnElement[int]:
    """Whole minutes from ``start`` to ``column``, in SQL (each engine has its own date
    arithmetic; SQLite keeps the UTC times as text)."""
    if conn.dialect.name == "sqlite":
        start_text = start.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        days = func.julianday(column) - func.julianday(start_text)
        return cast(days * 1440, Integer)
    seconds = func.extract("epoch", column - start)
    return cast(func.floor(seconds / 60), Integer)


def _enqueue(conn: Connection, batch: Sequence[Message], now: datetime) -> dict[str, str]:
    """:meth:`QueueStore.enqueue` as one transaction: the id of the message already
    queued under each duplicate's key, by the duplicate's id."""
    _insert_many(conn, [m for m in batch if m.key is None], now)
    keyed = [m for m in batch if m.key is not None]
    if not keyed:
        return {}
    # one statement for them all (SQLAlchemy's "insertmanyvalues"): the ids returned are
    # those inserted; a key already taken, before or earlier in the batch, returns none
    rows = [message_row(m, now) for m in keyed]
    inserted = set(conn.execute(_insert_unless_key_taken(conn), rows).scalars().all())
    _insert_children(conn, [m for m in keyed if m.id in inserted], now)
    return {m.id: _by_key(conn, m) for m in keyed if m.id not in inserted}


def _by_key(conn: Connection, message: Message) -> str:
    c = messages.c
    query = select(c.id).where(c.tenant == message.tenant, c.key == message.key)
    return str(conn.execute(query).scalar_one())


def _insert_many(conn: Connection, batch: Sequence[Message], now: datetime) -> None:
    """New messages that cannot conflict, with their attachments and events: one
    executemany per table."""
    if batch:
        conn.execute(insert(messages), [message_row(m, now) for m in batch])
        _insert_children(conn, batch, now)


def _insert_children(conn: Connection, batch: Sequence[Message], now: datetime) -> None:
    files = [
        {
            "message_id": m.id,
            "idx": i,
            "filename": a.filename,
            "content_type": a.content_type,
            "cid": a.cid,
            "content": a.content,
            "url": a.url,
            "path": a.path,
        }
        for m in batch
        for i, a in enumerate(m.attachments)
    ]
    if files:
        conn.execute(insert(attachments), files)
    queued = {"state": State.QUEUED}
    write_events(
        conn,
        [
            event_row(
                EventKind.MESSAGE_QUEUED, queued, now,
                tenant=m.tenant, source=m.source, message_id=m.id,
            )
            for m in batch
        ],
    )  # fmt: skip


def _insert_unless_key_taken(conn: Connection) -> Insert:
    """``INSERT INTO messages … ON CONFLICT (tenant, key) DO NOTHING RETURNING id``.

    The dialect's own insert construct: both engines spell the clause the same,
    but SQLAlchemy offers it only per dialect. A NULL key never conflicts.
    """
    stmt = upsert(conn.dialect, messages).on_conflict_do_nothing(
        index_elements=[messages.c.tenant, messages.c.key]
    )
    return stmt.returning(messages.c.id)


def _lease(
    conn: Connection,
    waiting: WaitingAccounts,
    owner: str,
    now: datetime,
    limit: int,
    lease_for: float,
    per_account: int | None,
    budget: Budget | None,
) -> list[Job]:
    """:meth:`QueueStore.lease` as one transaction (in the database thread on SQLite)."""
    ids = claim_due_ids(conn, now, limit, per_account, waiting, budget)
    if not ids:
        return []
    until = now + timedelta(seconds=lease_for)
    params = {"b_ids": ids, "b_owner": owner, "b_until": until, "b_now": now}
    rows = conn.execute(_CLAIM, params).mappings().all()
    files = _attachments_of(conn, ids)
    order = {id_: i for i, id_ in enumerate(ids)}
    jobs = [job_from_row(row, files.get(row["id"], ())) for row in rows]
    return sorted(jobs, key=lambda j: order[j.message.id])


#: Leased messages change hands, returning the rows to send (statements built once, so
#: each lease reuses their compiled form instead of building and hashing new ones)
_CLAIM = (
    update(messages)
    .where(messages.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(
        state=State.SENDING,
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_until"),
        updated_at=bindparam("b_now"),
    )
    .returning(*messages.c)
)
_FILES = (
    select(attachments)
    .where(attachments.c.message_id.in_(bindparam("b_ids", expanding=True)))
    .order_by(attachments.c.idx)
)


def _attachments_of(conn: Connection, ids: list[str]) -> dict[str, tuple[Attachment, ...]]:
    found: dict[str, list[Attachment]] = {}
    for r in conn.execute(_FILES, {"b_ids": ids}).mappings():
        found.setdefault(r["message_id"], []).append(
            Attachment(
                r["filename"], r["content_type"], r["content"], r["cid"], r["url"], r["path"]
            )
        )
    return {k: tuple(v) for k, v in found.items()}
