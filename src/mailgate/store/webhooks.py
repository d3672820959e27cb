"""Webhook endpoints per tenant, and the record of every POST made to them.

Each endpoint is the outbox consumer ``webhook:<id>``, registered (with its tenant and
event kinds as the consumer's filter) in the transaction that creates it, so no event
written after the 201 can miss it. Disabling an endpoint pauses its consumer: no new
deliveries, the pending ones kept for when it is enabled again. A delivery's outcome
(the attempt row, and the acknowledgement or the retry time) commits in one
transaction, with the endpoint's disabling when the receiver answered 410 Gone.

The signing secret is stored encrypted (:mod:`mailgate.crypto`); readers get it
decrypted in memory only through :meth:`WebhookStore.enabled` (the sender's view).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from mailgate.crypto import NoSecretKey, SecretBox
from mailgate.errors import NotFound
from mailgate.ids import new_id
from mailgate.store.database import Database
from mailgate.store.group_commit import GroupCommit
from mailgate.store.outbox import (
    ack_deliveries,
    fail_delivery,
    register_consumer,
    set_consumer_active,
    unregister_consumer,
)
from mailgate.store.schema import outbox_deliveries, webhook_attempts, webhooks

__all__ = ["Webhook", "WebhookAttempt", "WebhookStore", "consumer_name"]


def consumer_name(webhook_id: str) -> str:
    """The outbox consumer of a webhook endpoint."""
    return f"webhook:{webhook_id}"


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    tenant: str
    url: str
    kinds: tuple[str, ...] | None  #: None: every kind
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    secret: str | None = field(default=None, repr=False)  #: only in the sender's view


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    id: int
    event_id: int
    kind: str
    attempted_at: datetime
    outcome: str  #: delivered, failed, dead, gone
    status: int | None  #: the HTTP status; None when none came back
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    dead: int


class WebhookStore:
    """Endpoints on SQLite or PostgreSQL; ``box`` None: no secret key, so none can be
    created (:class:`~mailgate.crypto.NoSecretKey`)."""

    def __init__(self, db: Database, box: SecretBox | None) -> None:
        self.db = db
        self.box = box
        # outcomes of POSTs that end together share a transaction (one commit, not one
        # each: at hundreds of POSTs a second the commits were the sender's limit)
        self._outcomes: GroupCommit[_Outcome, bool] = GroupCommit(db, _write_outcomes)

    async def create(
        self,
        tenant: str,
        *,
        url: str,
        kinds: Sequence[str] | None,
        description: str,
        secret: str,
        enabled: bool,
        now: datetime,
    ) -> Webhook:
        row = {
            "id": new_id(),
            "tenant": tenant,
            "url": url,
            "kinds": None if kinds is None else list(kinds),
            "description": description,
            "secret_enc": self._seal(secret),
            "enabled": enabled,
            "disabled_reason": None,
            "created_at": now,
            "updated_at": now,
        }
        await self.db.transaction(_create, row)
        return _webhook(row)

    async def get(self, tenant: str, webhook_id: str) -> Webhook:
        """The endpoint; :class:`NotFound` also for another tenant's."""
        query = select(webhooks).where(webhooks.c.tenant == tenant, webhooks.c.id == webhook_id)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return _webhook(row)

    async def list(self, tenant: str) -> builtins.list[Webhook]:
        query = select(webhooks).where(webhooks.c.tenant == tenant).order_by(webhooks.c.id)
        async with self.db.read() as conn:
            return [_webhook(r) for r in (await conn.execute(query)).mappings()]

    async def enabled(self) -> builtins.list[Webhook]:
        """Every tenant's enabled endpoints, secrets decrypted: the sender's view."""
        query = select(webhooks).where(webhooks.c.enabled).order_by(webhooks.c.id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_webhook(r, secret=self._open(r["secret_enc"])) for r in rows]

    async def update(
        self, tenant: str, webhook_id: str, changes: dict[str, Any], now: datetime
    ) -> Webhook:
        """Change ``url``, ``kinds``, ``description``, ``enabled`` or ``secret``; enabling
        clears the reason it was disabled."""
        values = {k: v for k, v in changes.items() if k != "secret"}
        if "secret" in changes:
            values["secret_enc"] = self._seal(changes["secret"])
        if "kinds" in values and values["kinds"] is not None:
            values["kinds"] = list(values["kinds"])
        if values.get("enabled"):
            values["disabled_reason"] = None
        values["updated_at"] = now
        found = await self.db.transaction(_update, tenant, webhook_id, values, now)
        if not found:
            raise NotFound(f"no webhook {webhook_id!r}")
        return await self.get(tenant, webhook_id)

    async def delete(self, tenant: str, webhook_id: str) -> None:
        """The endpoint, its attempts and its pending deliveries."""
        if not await self.db.transaction(_delete, tenant, webhook_id):
            raise NotFound(f"no webhook {webhook_id!r}")

    async def delivered(
        self, webhook_id: str, event_id: int, kind: str, status: int, ms: int, now: datetime
    ) -> None:
        """A 2xx: the event is acknowledged and never sent again."""
        attempt = _attempt(webhook_id, event_id, kind, now, "delivered", status, None, ms)
        await self._outcomes.submit(_Outcome(attempt))

    async def failed(
        self,
        webhook_id: str,
        event_id: int,
        kind: str,
        *,
        status: int | None,
        error: str,
        ms: int,
        now: datetime,
        retry_at: datetime,
        dead_before: datetime,
        gone: bool = False,
    ) -> bool:
        """Not delivered: retried at ``retry_at``, dead-lettered if the event dates from
        before ``dead_before``; ``gone`` (410) also disables the endpoint. Returns
        whether the event is dead."""
        attempt = _attempt(webhook_id, event_id, kind, now, "failed", status, error, ms)
        return await self._outcomes.submit(_Outcome(attempt, retry_at, dead_before, gone))

    async def attempts(
        self, tenant: str, webhook_id: str, *, limit: int, before: int | None = None
    ) -> builtins.list[WebhookAttempt]:
        """The endpoint's attempts, newest first (``before``: older than that attempt id)."""
        await self.get(tenant, webhook_id)  # NotFound for another tenant's
        a = webhook_attempts.c
        query = select(webhook_attempts).where(a.webhook_id == webhook_id)
        if before is not None:
            query = query.where(a.id < before)
        query = query.order_by(a.id.desc()).limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_attempt_of(r) for r in rows]

    async def backlog(self, webhook_id: str) -> Backlog:
        """Events still to deliver to the endpoint, and those dead-lettered."""
        d = outbox_deliveries.c
        query = (
            select(d.state, func.count())
            .where(d.consumer == consumer_name(webhook_id), d.state.in_(["pending", "dead"]))
            .group_by(d.state)
        )
        async with self.db.read() as conn:
            counts = {str(s): int(n) for s, n in await conn.execute(query)}
        return Backlog(counts.get("pending", 0), counts.get("dead", 0))

    async def rotate(self, box: SecretBox) -> int:
        """Re-encrypt every stored secret under the box's first key; how many."""
        return int(await self.db.transaction(_rotate, box))

    def _seal(self, secret: str) -> bytes:
        if self.box is None:
            raise NoSecretKey("store a webhook signing secret")
        return self.box.encrypt(secret)

    def _open(self, sealed: bytes) -> str:
        if self.box is None:
            raise NoSecretKey("read a webhook signing secret")
        return self.box.decrypt(sealed)


def _create(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(webhooks).values(row))
    consumer = consumer_name(row["id"])
    register_consumer(conn, consumer, row["created_at"], row["tenant"], row["kinds"])
    if not row["enabled"]:
        set_consumer_active(conn, consumer, False)


def _update(
    conn: Connection, tenant: str, webhook_id: str, values: dict[str, Any], now: datetime
) -> bool:
    w = webhooks.c
    found = conn.execute(
        update(webhooks).where(w.tenant == tenant, w.id == webhook_id).values(values)
    ).rowcount
    if not found:
        return False
    if "kinds" in values:
        consumer = consumer_name(webhook_id)
        register_consumer(conn, consumer, now, tenant, values["kinds"])
    if "enabled" in values:
        set_consumer_active(conn, consumer_name(webhook_id), bool(values["enabled"]))
    return True


def _delete(conn: Connection, tenant: str, webhook_id: str) -> bool:
    w = webhooks.c
    found = conn.execute(delete(webhooks).where(w.tenant == tenant, w.id == webhook_id)).rowcount
    if found:
        conn.execute(delete(webhook_attempts).where(webhook_attempts.c.webhook_id == webhook_id))
        unregister_consumer(conn, consumer_name(webhook_id))
    return bool(found)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One POST's outcome: delivered when ``retry_at`` is None."""

    attempt: dict[str, Any]
    retry_at: datetime | None = None
    dead_before: datetime | None = None
    gone: bool = False


def _write_outcomes(conn: Connection, items: Sequence[_Outcome]) -> list[bool]:
    """Each outcome's attempt row and acknowledgement or retry; whether each is dead."""
    dead = []
    for o in items:
        consumer = consumer_name(o.attempt["webhook_id"])
        if o.retry_at is None or o.dead_before is None:
            _delivered(conn, consumer, dict(o.attempt))
            dead.append(False)
        else:
            dead.append(_failed(conn, consumer, dict(o.attempt), o.retry_at, o.dead_before, o.gone))
    return dead


def _delivered(conn: Connection, consumer: str, attempt: dict[str, Any]) -> None:
    conn.execute(insert(webhook_attempts).values(attempt))
    ack_deliveries(conn, consumer, [attempt["event_id"]], attempt["attempted_at"])


def _failed(
    conn: Connection,
    consumer: str,
    attempt: dict[str, Any],
    retry_at: datetime,
    dead_before: datetime,
    gone: bool,
) -> bool:
    now = attempt["attempted_at"]
    dead = fail_delivery(
        conn, consumer, attempt["event_id"], attempt["error"], now, retry_at, dead_before
    )
    if gone:
        attempt["outcome"] = "gone"
        reason = f"the receiver answered 410 Gone at {now.isoformat()}"
        conn.execute(
            update(webhooks)
            .where(webhooks.c.id == attempt["webhook_id"])
            .values(enabled=False, disabled_reason=reason, updated_at=now)
        )
        set_consumer_active(conn, consumer, False)
    elif dead:
        attempt["outcome"] = "dead"
    conn.execute(insert(webhook_attempts).values(attempt))
    return dead


def _rotate(conn: Connection, box: SecretBox) -> int:
    rows = conn.execute(select(webhooks.c.id, webhooks.c.secret_enc)).all()
    for webhook_id, sealed in rows:
        conn.execute(
            update(webhooks)
            .where(webhooks.c.id == webhook_id)
            .values(secret_enc=box.rotate(sealed))
        )
    return len(rows)


def _attempt(
    webhook_id: str,
    event_id: int,
    kind: str,
    now: datetime,
    outcome: str,
    status: int | None,
    error: str | None,
    ms: int,
) -> dict[str, Any]:
    return {
        "webhook_id": webhook_id,
        "event_id": event_id,
        "kind": kind,
        "attempted_at": now,
        "outcome": outcome,
        "status": status,
        "error": error,
        "duration_ms": ms,
    }


def _webhook(row: Any, *, secret: str | None = None) -> Webhook:
    kinds = row["kinds"]
    return Webhook(
        id=row["id"],
        tenant=row["tenant"],
        url=row["url"],
        kinds=None if kinds is None else tuple(kinds),
        description=row["description"],
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret=secret,
    )


def _attempt_of(row: Any) -> WebhookAttempt:
    return WebhookAttempt(
        id=row["id"],
        event_id=row["event_id"],
        kind=row["kind"],
        attempted_at=row["attempted_at"],
        outcome=row["outcome"],
        status=row["status"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )
