"""Failed SMTP AUTH attempts shared through the database (table ``auth_failures``).

Every ``serve`` process on one store writes its failures here and reads everyone's, so
the limit per client address (:class:`mailgate.ingest.auth_throttle.SharedAuthThrottle`)
is one limit, not one per process. A failure is one inserted row: no read-modify-write,
so processes never wait for each other's rows and none is lost. A successful AUTH writes
nothing.

The table stays small without any purge task: each write also deletes up to
:data:`PRUNE_BATCH` rows that have left the window (more than it adds, so expired rows
never pile up), and rows past the newest :data:`MAX_ROWS` (a flood of distinct
addresses inside one window). On PostgreSQL both deletes take only rows no other
writer has locked (``SKIP LOCKED``): two processes pruning at once never wait for or
deadlock on each other; what one skips the next write deletes. SQLite's writers are
serialised by the file's lock already.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Select, func, insert, select

from mailgate.store.database import Database
from mailgate.store.schema import auth_failures, delete_unlocked

__all__ = ["MAX_ROWS", "PRUNE_BATCH", "AuthFailureStore"]

#: rows kept at most; past it the oldest go first (as the in-memory throttle's
#: ``_MAX_THROTTLED`` addresses, times a few failures each: about 15 MB on PostgreSQL)
MAX_ROWS = 200_000
#: expired (or over the cap) rows each write deletes at most: one statement stays short
PRUNE_BATCH = 100

_CLIENT_LENGTH = 100  #: ``auth_failures.client``'s; an address is at most 45 characters


class AuthFailureStore:
    def __init__(self, db: Database, *, max_rows: int = MAX_ROWS) -> None:
        self.db = db
        self.max_rows = max_rows

    async def add(self, client: str, at: datetime, since: datetime, limit: int) -> list[datetime]:
        """Count a failure of ``client`` at ``at``, and prune (see the module docstring).

        Returns the client's newest failures after ``since`` (at most ``limit``, newest
        first) as the same transaction sees them, this one included: the caller learns
        whether the address is blocked now without another round trip."""
        return await self.db.transaction(_add, _key(client), at, since, limit, self.max_rows)

    async def newest(self, client: str, since: datetime, limit: int) -> list[datetime]:
        """``client``'s failures after ``since``, newest first, at most ``limit``."""
        async with self.db.read() as conn:
            rows = await conn.execute(_newest(_key(client), since, limit))
            return list(rows.scalars())

    async def count(self) -> int:
        """Rows kept (for tests and stats)."""
        async with self.db.read() as conn:
            total = await conn.execute(select(func.count()).select_from(auth_failures))
            return int(total.scalar_one())


def _key(client: str) -> str:
    return client[:_CLIENT_LENGTH]


def _newest(client: str, since: datetime, limit: int) -> Select[datetime]:
    c = auth_failures.c
    return (
        select(c.failed_at)
        .where(c.client == client, c.failed_at > since)
        .order_by(c.failed_at.desc())
        .limit(limit)
    )


def _add(
    conn: Connection, client: str, at: datetime, since: datetime, limit: int, max_rows: int
) -> list[datetime]:
    c = auth_failures.c
    added = conn.execute(insert(auth_failures).values(client=client, failed_at=at))
    [new_id] = added.inserted_primary_key or (None,)
    expired = select(c.id).where(c.failed_at <= since).order_by(c.failed_at).limit(PRUNE_BATCH)
    delete_unlocked(conn, c.id, expired)
    if new_id is not None and new_id > max_rows:
        beyond = select(c.id).where(c.id <= new_id - max_rows).order_by(c.id).limit(PRUNE_BATCH)
        delete_unlocked(conn, c.id, beyond)
    return list(conn.execute(_newest(client, since, limit)).scalars())
