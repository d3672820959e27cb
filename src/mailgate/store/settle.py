"""Settling leased messages in batches: outcomes of attempts and releases (waiting is not
trying), each with its outbox event, written by the queue's group commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from mailgate.model import Attempt, Outcome, State
from mailgate.policy import Decision
from mailgate.store.outbox import EventKind, event_row, kind_of_state, write_events
from mailgate.store.rows import attempt_row
from mailgate.store.schema import attempts, messages

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
    attempt_number: int = 1  #: which try this was (counted or not), from 1


def record_many(conn: Connection, items: Sequence[Settlement]) -> list[bool]:
    """Settle a batch: which leases still hold is read once (locked on PostgreSQL),
    then one prepared UPDATE runs for all of them (an executemany); every attempt and
    its event are written. Returns, per item, whether its lease still held."""
    rows = _leases(conn, items)
    kept = [_still_leased(rows.get(o.message_id), o) for o in items]
    settled = [_settlement_params(o) for o, ok in zip(items, kept, strict=True) if ok]
    if settled:
        conn.execute(_SETTLE, settled)
    conn.execute(
        insert(attempts), [{"message_id": o.message_id, **attempt_row(o.attempt)} for o in items]
    )
    write_events(conn, [e for o in items for e in _events(o, rows.get(o.message_id))])
    return kept


def _leases(conn: Connection, items: Sequence[Settlement]) -> dict[str, Any]:
    """Each settled message's lease, tenant and source (locked on PostgreSQL; SQLite's
    write lock already excludes other leases)."""
    query = _LEASES if conn.dialect.name == "sqlite" else _LEASES_LOCKED
    ids = [o.message_id for o in items]
    return {row.id: row for row in conn.execute(query, {"b_ids": ids})}


def _still_leased(row: Any, o: Settlement) -> bool:
    """Is the message still ``sending`` under its owner's lease?"""
    return row is not None and row.lease_owner == o.owner and row.state == State.SENDING


_LEASES = select(
    messages.c.id,
    messages.c.lease_owner,
    messages.c.state,
    messages.c.tenant,
    messages.c.source,
    messages.c.message_id,
).where(messages.c.id.in_(bindparam("b_ids", expanding=True)))
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


def _events(o: Settlement, row: Any) -> list[dict[str, Any]]:
    """The attempt's outbox events: the message's new state, and each recipient refused
    for good. An uncounted attempt (the account's problem) leaves the message waiting."""
    tenant, source = (row.tenant, row.source) if row is not None else ("default", None)
    state = o.decision.state
    kind = EventKind.MESSAGE_WAITING if state is State.QUEUED else kind_of_state(state)
    payload = _settled_payload(o)
    if row is not None:
        payload["message_id_header"] = row.message_id  # what the recipient's Message-ID says
    found = [
        event_row(kind, payload, o.attempt.at,
                  tenant=tenant, source=source, message_id=o.message_id)
    ]  # fmt: skip
    for rcpt, result in o.attempt.recipients.items():
        if result.status is Outcome.FAILED:
            refused = {"recipient": rcpt, "code": result.code, "text": result.text,
                       "attempt": o.attempt_number}  # fmt: skip
            found.append(
                event_row(EventKind.RECIPIENT_FAILED, refused, o.attempt.at,
                          tenant=tenant, source=source, message_id=o.message_id)
            )  # fmt: skip
    return found


def _settled_payload(o: Settlement) -> dict[str, Any]:
    """Everything a consumer needs about the attempt, without reading the message."""
    a, d = o.attempt, o.decision
    payload: dict[str, Any] = {
        "state": d.state,
        "attempt": o.attempt_number,
        "code": a.code,
        "enhanced_code": a.enhanced_code,
        "failure_class": a.failure_class,
        "text": a.text,
        "account": a.account,
        "recipients": {
            rcpt: {"status": r.status, "code": r.code, "text": r.text}
            for rcpt, r in a.recipients.items()
        },
        "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None,
    }
    if d.reason is not None:
        payload["reason"] = d.reason
    if d.wait_reason is not None:
        payload["wait_reason"] = d.wait_reason
    return payload


def release_many(conn: Connection, items: Sequence[Release]) -> list[bool]:
    """Write releases (see :meth:`QueueStore.release`), each with its outbox event."""
    c = messages.c
    kept = []
    events_ = []
    for r in items:
        row = conn.execute(
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
            .returning(c.tenant, c.source)
        ).first()
        kept.append(row is not None)
        if row is not None:
            waiting = {"state": r.state, "wait_reason": r.reason,
                       "next_attempt_at": r.until.isoformat()}  # fmt: skip
            events_.append(
                event_row(EventKind.MESSAGE_WAITING, waiting, r.now,
                          tenant=row.tenant, source=row.source, message_id=r.message_id)
            )  # fmt: skip
    if events_:
        write_events(conn, events_)
    return kept
