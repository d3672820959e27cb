"""Settling leased messages in batches: outcomes of attempts and releases (waiting is not
trying), each with its outbox event, written by the queue's group commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from mailgate.model import Attempt, State
from mailgate.policy import Decision
from mailgate.store.rows import attempt_row, event_row
from mailgate.store.schema import attempts, events, messages

__all__ = ["Release", "Settlement", "record_many", "release_many"]


@dataclass(frozen=True, slots=True)
class Release:
    """A leased message handed back unsent until a time, without an attempt."""

    message_id: str
    owner: str
    state: State
    until: datetime
    reason: str
    now: datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    """One finished attempt waiting to be recorded."""

    message_id: str
    owner: str
    attempt: Attempt
    decision: Decision


def record_many(conn: Connection, items: Sequence[Settlement]) -> list[bool]:
    """Settle a batch: which leases still hold is read once (locked on PostgreSQL),
    then one prepared UPDATE runs for all of them (an executemany); every attempt and
    its event are written. Returns, per item, whether its lease still held."""
    kept = _still_leased(conn, items)
    settled = [_settlement_params(o) for o, ok in zip(items, kept, strict=True) if ok]
    if settled:
        conn.execute(_SETTLE, settled)
    conn.execute(
        insert(attempts), [{"message_id": o.message_id, **attempt_row(o.attempt)} for o in items]
    )
    conn.execute(
        insert(events),
        [
            event_row(o.message_id, o.decision.state, _settled_payload(o), o.attempt.at)
            for o in items
        ],
    )
    return kept


def _still_leased(conn: Connection, items: Sequence[Settlement]) -> list[bool]:
    """For each settlement: is its message still ``sending`` under its owner's lease?"""
    # SQLite's write lock already excludes other leases; PostgreSQL locks the rows
    query = _LEASES if conn.dialect.name == "sqlite" else _LEASES_LOCKED
    rows = {row.id: row for row in conn.execute(query, {"b_ids": [o.message_id for o in items]})}
    return [
        (row := rows.get(o.message_id)) is not None
        and row.lease_owner == o.owner
        and row.state == State.SENDING
        for o in items
    ]


_LEASES = select(messages.c.id, messages.c.lease_owner, messages.c.state).where(
    messages.c.id.in_(bindparam("b_ids", expanding=True))
)
_LEASES_LOCKED = _LEASES.with_for_update()

#: One attempt's outcome on its message; executed for many at once. The ``b_`` names
#: keep the parameters apart from the columns they set.
_SETTLE = (
    update(messages)
    .where(messages.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        pending=bindparam("b_pending"),
        delivered=bindparam("b_delivered"),
        # an uncounted attempt (a configuration error, an account problem) is recorded,
        # but leaves the count that drives backoff and giving up alone
        attempt_count=messages.c.attempt_count + bindparam("b_counted"),
        next_attempt_at=bindparam("b_next"),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("b_at"),
        last_error=bindparam("b_error"),
        wait_reason=bindparam("b_wait"),
    )
)


def _settlement_params(o: Settlement) -> dict[str, Any]:
    return {
        "b_id": o.message_id,
        "b_state": o.decision.state,
        "b_pending": list(o.decision.pending),
        "b_delivered": o.decision.delivered,
        "b_counted": int(o.decision.counted),
        "b_next": o.decision.next_attempt_at,
        "b_at": o.attempt.at,
        "b_error": _last_error(o),
        "b_wait": o.decision.wait_reason,
    }


def _last_error(o: Settlement) -> str | None:
    if o.decision.state is State.SENT:
        return None
    return o.decision.last_error or o.attempt.text


def _settled_payload(o: Settlement) -> dict[str, Any]:
    """The outbox event of a settled attempt: its state, reply code, class and reason."""
    payload: dict[str, Any] = {"state": o.decision.state, "code": o.attempt.code}
    if o.attempt.failure_class is not None:
        payload["failure_class"] = o.attempt.failure_class
    if o.decision.reason is not None:
        payload["reason"] = o.decision.reason
    return payload


def release_many(conn: Connection, items: Sequence[Release]) -> list[bool]:
    """Write releases (see :meth:`QueueStore.release`), each with its outbox event."""
    c = messages.c
    kept = []
    for r in items:
        result = conn.execute(
            update(messages)
            .where(c.id == r.message_id, c.lease_owner == r.owner, c.state == State.SENDING)
            .values(
                state=r.state,
                next_attempt_at=r.until,
                wait_reason=r.reason,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=r.now,
            )
        )
        kept.append(bool(result.rowcount))
    events_ = [
        event_row(r.message_id, "waiting", {"state": r.state, "reason": r.reason}, r.now)
        for r, ok in zip(items, kept, strict=True)
        if ok
    ]
    if events_:
        conn.execute(insert(events), events_)
    return kept
