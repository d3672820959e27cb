"""The outbox: every reportable change is an event, written in the same transaction as
the change itself, so a crash can lose neither without the other.

Consumers (webhooks, report sync, the Firestore write-back) are registered by name in
the store. Writing an event also writes one delivery row per registered consumer, in
the same transaction, so no consumer can miss an event however commits interleave
across processes (a cursor over event ids could: PostgreSQL commits out of id order).
A consumer claims its due rows (``SKIP LOCKED`` on PostgreSQL, so several processes
share the work), acknowledges each, or fails it with the error and the time to try
again; a claim runs for a lease, after which an unacknowledged event (its claimer
died) is due again. An event still failing ``dead_after`` after it happened is
dead-lettered, its last error kept.

An event names its :class:`EventKind`, the tenant, the queued message (or captured
mail) it is about, that message's source (``rest``, ``smtp``, ``firestore:<document
path>``) and a payload complete enough for a consumer that reads nothing else: the
state, the attempt's number, reply code, enhanced code, failure class and text, the
per-recipient results, and when the next attempt is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from mailgate.model import State
from mailgate.store.database import Database
from mailgate.store.prepared import Prepared, sqlite_driver
from mailgate.store.schema import events, outbox_consumers, outbox_deliveries, upsert

__all__ = [
    "EventKind",
    "OutboxEvent",
    "OutboxStore",
    "ack_deliveries",
    "event_row",
    "fail_delivery",
    "kind_of_state",
    "register_consumer",
    "set_consumer_active",
    "unregister_consumer",
    "write_events",
]


class EventKind(StrEnum):
    MESSAGE_QUEUED = "message.queued"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DEFERRED = "message.deferred"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_CANCELLED = "message.cancelled"
    #: held though due, without an attempt spent: its account is disabled or broken, or
    #: over its rate limit (``wait_reason`` says which)
    MESSAGE_WAITING = "message.waiting"
    RECIPIENT_FAILED = "recipient.failed"  #: one recipient refused for good
    INBOX_RECEIVED = "inbox.received"  #: mail captured
    ACCOUNT_FAILING = "account.failing"
    ACCOUNT_RECOVERED = "account.recovered"


_BY_STATE = {
    State.QUEUED: EventKind.MESSAGE_QUEUED,
    State.SENT: EventKind.MESSAGE_SENT,
    State.DEFERRED: EventKind.MESSAGE_DEFERRED,
    State.FAILED: EventKind.MESSAGE_FAILED,
    State.CANCELLED: EventKind.MESSAGE_CANCELLED,
}


def kind_of_state(state: State) -> EventKind:
    """The event of a message reaching ``state`` (``sending`` is not reported)."""
    return _BY_STATE[state]


def event_row(
    kind: EventKind,
    payload: dict[str, Any],
    now: datetime,
    *,
    tenant: str,
    source: str | None,
    message_id: str | None = None,
    inbox_id: str | None = None,
) -> dict[str, Any]:
    """One ``events`` row."""
    return {
        "tenant": tenant,
        "message_id": message_id,
        "inbox_id": inbox_id,
        "source": source,
        "kind": kind.value,
        "payload": payload,
        "created_at": now,
    }


def write_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert events and, in the same transaction, a pending delivery of each to every
    registered consumer."""
    if not rows:
        return
    if sqlite_driver(conn) is not None:  # statements compiled once (store/prepared.py)
        ids = _INSERT_EVENT.insert_ids(conn, rows)
        _FAN_OUT_ONE.run(conn, [{"b_id": i} for i in ids])
        return
    inserted = conn.execute(
        insert(events).returning(events.c.id, sort_by_parameter_order=True), list(rows)
    )
    conn.execute(_FAN_OUT, {"b_ids": list(inserted.scalars())})


_consumer = outbox_consumers.c


def _fan_out(event_ids: ColumnElement[bool]) -> Insert:
    """A pending delivery of the events ``event_ids`` selects to each active consumer
    that takes them (its tenant, kinds and source prefix)."""
    return insert(outbox_deliveries).from_select(
        ["consumer", "event_id", "state", "attempts", "next_attempt_at", "updated_at",
         "ordering_key"],
        select(
            _consumer.name,
            events.c.id,
            literal("pending"),
            literal(0),
            events.c.created_at,
            events.c.created_at,
            func.coalesce(events.c.message_id, events.c.inbox_id),
        )
        .select_from(events.join(outbox_consumers, _consumer.active))
        .where(
            event_ids,
            or_(_consumer.tenant.is_(None), _consumer.tenant == events.c.tenant),
            or_(_consumer.kinds.is_(None), _consumer.kinds.contains(" " + events.c.kind + " ")),
            or_(
                _consumer.source_prefix.is_(None),
                func.substr(events.c.source, 1, func.length(_consumer.source_prefix))
                == _consumer.source_prefix,
            ),
        ),
    )  # fmt: skip


_FAN_OUT = _fan_out(events.c.id.in_(bindparam("b_ids", expanding=True)))
_FAN_OUT_ONE = Prepared(_fan_out(events.c.id == bindparam("b_id")))
_INSERT_EVENT = Prepared(
    insert(events),
    ["tenant", "message_id", "inbox_id", "source", "kind", "payload", "created_at"],
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event as a consumer receives it."""

    id: int
    kind: str
    tenant: str
    message_id: str | None
    inbox_id: str | None
    source: str | None
    payload: dict[str, Any]
    created_at: datetime
    attempts: int = 0  #: failed deliveries to this consumer so far
    last_error: str | None = None


class OutboxStore:
    """The consumers' side of the outbox."""

    def __init__(self, db: Database, *, dead_after: float = 24 * 3600) -> None:
        self.db = db
        self.dead_after = timedelta(seconds=dead_after)

    async def register(
        self,
        consumer: str,
        now: datetime,
        *,
        tenant: str | None = None,
        kinds: Sequence[str] | None = None,
        source_prefix: str | None = None,
    ) -> None:
        """Deliver every event from now on to ``consumer`` too: only ``tenant``'s, only of
        ``kinds``, only of messages whose source starts with ``source_prefix``, when given
        (idempotent; a second call replaces the filter)."""
        await self.db.transaction(register_consumer, consumer, now, tenant, kinds, source_prefix)

    async def unregister(self, consumer: str) -> None:
        """Stop delivering to ``consumer``; its pending deliveries are dropped."""
        await self.db.transaction(unregister_consumer, consumer)

    async def set_active(self, consumer: str, active: bool) -> None:
        """Pause (no new deliveries; pending ones are kept) or resume ``consumer``."""
        await self.db.transaction(set_consumer_active, consumer, active)

    async def replay(self, consumer: str, event_id: int, now: datetime) -> bool:
        """Deliver event ``event_id`` to ``consumer`` again, now, whatever became of it
        before (delivered, dead or never fanned out). False if the event is gone."""
        return await self.db.transaction(_replay, consumer, event_id, now)

    async def claim(
        self, consumer: str, now: datetime, limit: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        """Up to ``limit`` due events for ``consumer``, oldest first, held for
        ``lease_seconds``; others sharing the consumer skip them meanwhile."""
        until = now + timedelta(seconds=lease_seconds)
        return await self.db.transaction(_claim, consumer, now, until, limit)

    async def ack(self, consumer: str, event_ids: Sequence[int], now: datetime) -> None:
        """Delivered: never again."""
        await self.db.transaction(ack_deliveries, consumer, list(event_ids), now)

    async def fail(
        self, consumer: str, event_id: int, error: str, now: datetime, retry_at: datetime
    ) -> bool:
        """Not delivered: try again at ``retry_at``, or dead-letter it if the event is
        older than ``dead_after``. Returns whether it is dead."""
        return await self.db.transaction(
            fail_delivery, consumer, event_id, error, now, retry_at, now - self.dead_after
        )

    async def due(self, consumers: Sequence[str], now: datetime) -> set[str]:
        """Which of ``consumers`` have an event due now: a read, cheap enough to poll."""
        if not consumers:
            return set()
        d = outbox_deliveries.c
        query = (
            select(d.consumer)
            .where(d.consumer.in_(list(consumers)), d.state == "pending", d.next_attempt_at <= now)
            .distinct()
        )
        async with self.db.read() as conn:
            return {str(c) for c in (await conn.execute(query)).scalars()}

    async def event(self, event_id: int) -> OutboxEvent | None:
        """One event, whoever has it (None once retention took it)."""
        query = select(events).where(events.c.id == event_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _event({**row, "attempts": 0, "last_error": None})

    async def dead(self, consumer: str, limit: int = 100) -> list[OutboxEvent]:
        """Dead-lettered events, newest first, with their last error."""
        d = outbox_deliveries.c
        query = (
            _EVENT_COLUMNS.where(d.consumer == consumer, d.state == "dead")
            .order_by(d.event_id.desc())
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [_event(r) for r in (await conn.execute(query)).mappings()]

    async def backlogs(self) -> dict[str, int]:
        """Every registered consumer's backlog (zero when it has none)."""
        d = outbox_deliveries.c
        pending = select(d.consumer, func.count()).where(d.state == "pending").group_by(d.consumer)
        async with self.db.read() as conn:
            counts = {str(c): int(n) for c, n in await conn.execute(pending)}
            names = list((await conn.execute(select(outbox_consumers.c.name))).scalars())
        return {name: counts.get(name, 0) for name in names}

    async def backlog(self, consumer: str) -> int:
        """Events not delivered to ``consumer`` yet (dead ones not counted)."""
        d = outbox_deliveries.c
        query = select(func.count()).where(d.consumer == consumer, d.state == "pending")
        async with self.db.read() as conn:
            return int((await conn.execute(query)).scalar_one())


_EVENT_COLUMNS = select(
    events,
    outbox_deliveries.c.attempts,
    outbox_deliveries.c.last_error,
).join_from(outbox_deliveries, events, outbox_deliveries.c.event_id == events.c.id)


# An earlier event of the same message still pending for the consumer (waiting, in
# flight elsewhere, or failing): the later one waits for it, so a receiver never sees a
# message's ``sent`` before its ``queued``. Events without a message are never held.
_earlier = outbox_deliveries.alias("earlier")
_EARLIER_PENDING = select(_earlier.c.event_id).where(
    _earlier.c.consumer == outbox_deliveries.c.consumer,
    _earlier.c.ordering_key == outbox_deliveries.c.ordering_key,
    _earlier.c.event_id < outbox_deliveries.c.event_id,
    _earlier.c.state == "pending",
)


def _event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row["id"],
        kind=row["kind"],
        tenant=row["tenant"],
        message_id=row["message_id"],
        inbox_id=row["inbox_id"],
        source=row["source"],
        payload=row["payload"],
        created_at=row["created_at"],
        attempts=row["attempts"],
        last_error=row["last_error"],
    )


def register_consumer(
    conn: Connection,
    consumer: str,
    now: datetime,
    tenant: str | None = None,
    kinds: Sequence[str] | None = None,
    source_prefix: str | None = None,
) -> None:
    """:meth:`OutboxStore.register` inside the caller's transaction."""
    kinds_text = None if kinds is None else " " + " ".join(sorted(set(kinds))) + " "
    fields = {"tenant": tenant, "kinds": kinds_text, "source_prefix": source_prefix}
    statement = upsert(conn.dialect, outbox_consumers).values(
        name=consumer, created_at=now, active=True, **fields
    )
    conn.execute(
        statement.on_conflict_do_update(index_elements=[outbox_consumers.c.name], set_=fields)
    )


def unregister_consumer(conn: Connection, consumer: str) -> None:
    """:meth:`OutboxStore.unregister` inside the caller's transaction."""
    conn.execute(delete(outbox_deliveries).where(outbox_deliveries.c.consumer == consumer))
    conn.execute(delete(outbox_consumers).where(outbox_consumers.c.name == consumer))


def set_consumer_active(conn: Connection, consumer: str, active: bool) -> None:
    """:meth:`OutboxStore.set_active` inside the caller's transaction."""
    conn.execute(update(outbox_consumers).where(_consumer.name == consumer).values(active=active))


def _replay(conn: Connection, consumer: str, event_id: int, now: datetime) -> bool:
    key = conn.execute(
        select(func.coalesce(events.c.message_id, events.c.inbox_id)).where(events.c.id == event_id)
    ).first()
    if key is None:
        return False
    again = {"state": "pending", "attempts": 0, "next_attempt_at": now, "updated_at": now}
    statement = upsert(conn.dialect, outbox_deliveries).values(
        consumer=consumer, event_id=event_id, ordering_key=key[0], last_error=None, **again
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[outbox_deliveries.c.consumer, outbox_deliveries.c.event_id],
            set_={**again, "last_error": None},
        )
    )
    return True


def _claim(
    conn: Connection, consumer: str, now: datetime, until: datetime, limit: int
) -> list[OutboxEvent]:
    d = outbox_deliveries.c
    due = (
        select(d.event_id)
        .where(
            d.consumer == consumer,
            d.state == "pending",
            d.next_attempt_at <= now,
            ~_EARLIER_PENDING.exists(),
        )
        # the due index's order: no sort of every due row (a backlog of thousands made
        # each claim three times slower); equal times fall back to the event's order
        .order_by(d.next_attempt_at, d.event_id)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":  # SQLite's write lock already excludes the others
        due = due.with_for_update(skip_locked=True, of=outbox_deliveries)
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(
        update(outbox_deliveries)
        .where(d.consumer == consumer, d.event_id.in_(ids))
        .values(next_attempt_at=until, updated_at=now)
    )
    query = _EVENT_COLUMNS.where(d.consumer == consumer, d.event_id.in_(ids)).order_by(d.event_id)
    return [_event(r) for r in conn.execute(query).mappings()]


def ack_deliveries(conn: Connection, consumer: str, ids: list[int], now: datetime) -> None:
    d = outbox_deliveries.c
    conn.execute(
        update(outbox_deliveries)
        .where(d.consumer == consumer, d.event_id.in_(ids), d.state == "pending")
        .values(state="done", updated_at=now, last_error=None)
    )


def fail_delivery(
    conn: Connection,
    consumer: str,
    event_id: int,
    error: str,
    now: datetime,
    retry_at: datetime,
    dead_before: datetime,
) -> bool:
    d = outbox_deliveries.c
    created = conn.execute(select(events.c.created_at).where(events.c.id == event_id)).scalar()
    dead = created is not None and created <= dead_before
    conn.execute(
        update(outbox_deliveries)
        .where(d.consumer == consumer, d.event_id == event_id, d.state == "pending")
        .values(
            state="dead" if dead else "pending",
            attempts=d.attempts + 1,
            last_error=error,
            next_attempt_at=retry_at,
            updated_at=now,
        )
    )
    return dead
