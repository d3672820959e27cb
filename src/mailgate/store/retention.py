"""Retention: finished messages and delivered events are deleted after a while.

An event goes once it is older than the cut-off and no active consumer still has it
pending (acknowledged and dead-lettered ones go, and so do those a disabled webhook
never took); a message goes once it is finished (sent, failed or cancelled), its last
change is older than the cut-off and none of its events is still pending for an active
consumer. Its attempts and attachments go with it, and webhook attempts older than the
cut-off go too. Deletes run in batches, each its own short transaction, so a purge
never holds the store for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, select

from mailgate.model import State
from mailgate.store.database import Database
from mailgate.store.schema import (
    events,
    messages,
    outbox_consumers,
    outbox_deliveries,
    webhook_attempts,
)

__all__ = ["Purged", "purge"]

_FINISHED = (State.SENT, State.FAILED, State.CANCELLED)


@dataclass(frozen=True, slots=True)
class Purged:
    messages: int
    events: int


async def purge(db: Database, cutoff: datetime, *, batch: int = 1000) -> Purged:
    """Delete what finished before ``cutoff`` (see the module docstring)."""
    total_messages = total_events = 0
    while True:
        n = await db.transaction(_purge_messages, cutoff, batch)
        total_messages += n
        if n < batch:
            break
    while True:
        n = await db.transaction(_purge_events, cutoff, batch)
        total_events += n
        if n < batch:
            break
    await db.transaction(_purge_attempts, cutoff)
    return Purged(total_messages, total_events)


def _purge_messages(conn: Connection, cutoff: datetime, batch: int) -> int:
    c, e, d = messages.c, events.c, outbox_deliveries.c
    pending = (
        select(e.id)
        .join(outbox_deliveries, d.event_id == e.id)
        .join(outbox_consumers, outbox_consumers.c.name == d.consumer)
        .where(e.message_id == c.id, d.state == "pending", outbox_consumers.c.active)
        .exists()
    )
    old = select(c.id).where(c.state.in_(_FINISHED), c.updated_at < cutoff, ~pending).limit(batch)
    ids = list(conn.execute(old).scalars())
    if ids:
        conn.execute(delete(messages).where(c.id.in_(ids)))
    return len(ids)


def _purge_events(conn: Connection, cutoff: datetime, batch: int) -> int:
    e, d = events.c, outbox_deliveries.c
    pending = (
        select(d.event_id)
        .join(outbox_consumers, outbox_consumers.c.name == d.consumer)
        .where(d.event_id == e.id, d.state == "pending", outbox_consumers.c.active)
        .exists()
    )
    old = select(e.id).where(e.created_at < cutoff, ~pending).order_by(e.id).limit(batch)
    ids = list(conn.execute(old).scalars())
    if ids:
        conn.execute(delete(outbox_deliveries).where(d.event_id.in_(ids)))
        conn.execute(delete(events).where(e.id.in_(ids)))
    return len(ids)


def _purge_attempts(conn: Connection, cutoff: datetime) -> None:
    """Webhook attempts: their record goes with the events they carried."""
    conn.execute(delete(webhook_attempts).where(webhook_attempts.c.attempted_at < cutoff))
