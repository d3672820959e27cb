"""Token buckets shared through the database (table ``rate_buckets``).

Several ``serve`` processes on one database respect one limit because every
reservation is an atomic read-modify-write of the account's bucket rows: on
PostgreSQL the rows are created if missing (``INSERT … ON CONFLICT DO NOTHING``)
and then locked with ``SELECT … FOR UPDATE`` for the rest of the transaction, so a
second process reserving for the same account waits for the first to commit and
sees its tokens gone. On SQLite the transaction starts with ``BEGIN IMMEDIATE``
(:meth:`Database.write`), which already serialises writers across processes.

The arithmetic is :func:`mailgate.deliver.pacing.take`; this module only loads and
stores its state. Buckets of different accounts never touch the same rows, so
they never wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from mailgate.deliver.pacing import Bucket, BucketSpec, take
from mailgate.store.database import Database
from mailgate.store.schema import rate_buckets, upsert

if TYPE_CHECKING:
    from mailgate.store.database import StoreConnection

__all__ = ["RateLimitStore"]


class RateLimitStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def take(
        self, specs: Sequence[BucketSpec], now: datetime, count: int = 1
    ) -> datetime | None:
        """Take ``count`` tokens from every bucket in ``specs`` atomically, or none.

        None: granted. Otherwise the earliest time worth asking again. No specs: granted
        without touching the database.
        """
        if not specs:
            return None
        keys = [s.key for s in specs]
        async with self.db.write() as conn:
            await _create_missing(conn, specs, now)
            stored = await _locked(conn, keys)
            grant = take(specs, [stored.get(k) for k in keys], now, count)
            if grant.retry_at is None:
                for key, bucket in zip(keys, grant.buckets, strict=True):
                    await conn.execute(
                        update(rate_buckets)
                        .where(rate_buckets.c.key == key)
                        .values(tokens=bucket.tokens, updated_at=bucket.updated_at)
                    )
        return grant.retry_at

    async def tokens(self, key: str) -> Bucket | None:
        """A bucket's stored state (for tests and stats); None if never used."""
        query = select(rate_buckets.c.tokens, rate_buckets.c.updated_at).where(
            rate_buckets.c.key == key
        )
        async with self.db.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else Bucket(float(row.tokens), row.updated_at)


async def _create_missing(
    conn: StoreConnection, specs: Sequence[BucketSpec], now: datetime
) -> None:
    """Insert absent buckets full, so the row exists to be locked; present ones are kept.

    ``ON CONFLICT DO NOTHING``: two processes creating the same bucket at once both
    succeed, and the row holds whichever came first.
    """
    stmt = upsert(conn.dialect, rate_buckets)
    stmt = stmt.on_conflict_do_nothing(index_elements=[rate_buckets.c.key])
    await conn.execute(
        stmt, [{"key": s.key, "tokens": s.capacity, "updated_at": now} for s in specs]
    )


async def _locked(conn: StoreConnection, keys: list[str]) -> dict[str, Bucket]:
    """The buckets' rows, locked until the transaction ends.

    PostgreSQL locks the rows; SQLite already holds the file's write lock.
    """
    query = (
        select(rate_buckets.c.key, rate_buckets.c.tokens, rate_buckets.c.updated_at)
        .where(rate_buckets.c.key.in_(keys))
        .order_by(
            rate_buckets.c.key
        )  # one lock order everywhere: no deadlock between accounts' windows
        .with_for_update()
    )
    rows = (await conn.execute(query)).all()
    return {r.key: Bucket(float(r.tokens), r.updated_at) for r in rows}
