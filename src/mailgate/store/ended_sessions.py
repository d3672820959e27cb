"""Admin UI sessions ended by a logout, shared through the database (table
``ended_sessions``).

A UI session is a signed cookie (:mod:`mailgate.ui.sessions`) that opens the UI until it
expires; with nothing kept on the server, a copy of it kept doing so after its logout.
A logout writes the session's id here with its expiry, and every process on the store
refuses that id from then on. A row is of no use past its expiry (the cookie is refused
for its age): each logout deletes up to :data:`PRUNE_BATCH` such rows, more than it adds,
so they never pile up, skipping rows another process's prune has locked.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select

from mailgate.store.database import Database
from mailgate.store.schema import delete_unlocked, ended_sessions, upsert

__all__ = ["PRUNE_BATCH", "EndedSessionStore"]

#: expired rows each logout deletes at most: one statement stays short
PRUNE_BATCH = 100


class EndedSessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def end(self, session_id: str, expires: datetime, now: datetime) -> None:
        """Refuse ``session_id`` from now until ``expires`` (ending it twice is once)."""
        await self.db.transaction(_end, session_id, expires, now)

    async def ended(self, session_id: str) -> bool:
        """Whether a logout ended ``session_id``."""
        c = ended_sessions.c
        async with self.db.read() as conn:
            found = await conn.execute(select(c.id).where(c.id == session_id))
            return found.first() is not None

    async def count(self) -> int:
        """Rows kept (for tests)."""
        async with self.db.read() as conn:
            total = await conn.execute(select(func.count()).select_from(ended_sessions))
            return int(total.scalar_one())


def _end(conn: Connection, session_id: str, expires: datetime, now: datetime) -> None:
    c = ended_sessions.c
    added = upsert(conn.dialect, ended_sessions).values(id=session_id, expires_at=expires)
    conn.execute(added.on_conflict_do_nothing(index_elements=[c.id]))
    expired = select(c.id).where(c.expires_at <= now).order_by(c.expires_at).limit(PRUNE_BATCH)
    delete_unlocked(conn, c.id, expired)
