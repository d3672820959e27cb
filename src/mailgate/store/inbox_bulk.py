"""Captured mail many messages at a time, as Mailpit's API asks for it.

Mailpit pages by offset (``?start=``), reports totals beside every page and changes
read state and tags for a list of ids, a search or a whole mailbox at once. These
queries sit beside :class:`~mailgate.store.inbox.InboxStore` (which pages by cursor)
and share its row mapping; a scope is a tenant's mail, or one of its inboxes'.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Text, and_, case, cast, func, select, update

from mailgate.store.database import Database
from mailgate.store.inbox import _SUMMARY, CapturedRecord, _record, _scope
from mailgate.store.inbox_search import has_tag, matching
from mailgate.store.schema import inbox

if TYPE_CHECKING:
    from mailgate.inbox.search import Term

__all__ = ["Counts", "InboxBulk"]

_IN_BATCH = 500  #: ids in one IN (...), under SQLite's old limit of 999 parameters


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    unread: int


class InboxBulk:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self,
        tenant: str,
        *,
        box: str | None = None,
        query: Sequence[Term] = (),
        start: int = 0,
        limit: int = 50,
    ) -> list[CapturedRecord]:
        """Newest first, skipping ``start``; what every term of ``query`` matches."""
        if limit <= 0:
            return []
        stmt = (
            select(*_SUMMARY)
            .where(_scope(tenant, box), matching(query))
            .order_by(inbox.c.id.desc())
            .offset(max(start, 0))
            .limit(limit)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_record(row) for row in rows]

    async def counts(
        self, tenant: str, *, box: str | None = None, query: Sequence[Term] = ()
    ) -> Counts:
        """How many messages of the scope ``query`` matches, and how many of them unread."""
        unread = func.sum(case((inbox.c.read.is_(False), 1), else_=0))
        stmt = select(func.count(), unread).where(_scope(tenant, box), matching(query))
        async with self.db.read() as conn:
            total, unread_count = (await conn.execute(stmt)).one()
        return Counts(int(total), int(unread_count or 0))

    async def tag_counts(self, tenant: str, *, box: str | None = None) -> dict[str, int]:
        """Every tag in the scope and how many messages carry it, by name ignoring case."""
        stmt = select(inbox.c.tags).where(
            _scope(tenant, box), func.length(cast(inbox.c.tags, Text)) > 2
        )
        counts: Counter[str] = Counter()
        async with self.db.read() as conn:
            for (tags,) in await conn.execute(stmt):
                counts.update(tags or [])
        return dict(sorted(counts.items(), key=lambda item: item[0].lower()))

    async def set_read(
        self,
        tenant: str,
        read: bool,
        *,
        box: str | None = None,
        ids: Sequence[str] | None = None,
        query: Sequence[Term] = (),
    ) -> int:
        """Mark read or unread: the ``ids`` given, else what ``query`` matches (every
        message of the scope without one); how many changed."""
        where: list[ColumnElement[bool]] = [_scope(tenant, box), inbox.c.read.is_(not read)]
        changed = 0
        async with self.db.write() as conn:
            if ids is None:
                stmt = update(inbox).where(*where, matching(query)).values(read=read)
                return int((await conn.execute(stmt)).rowcount)
            for begin in range(0, len(ids), _IN_BATCH):
                batch = list(ids[begin : begin + _IN_BATCH])
                stmt = update(inbox).where(*where, inbox.c.id.in_(batch)).values(read=read)
                changed += int((await conn.execute(stmt)).rowcount)
        return changed

    async def boxes_of(
        self, tenant: str, ids: Sequence[str], *, box: str | None = None
    ) -> dict[str, str]:
        """Which of ``ids`` the scope holds, and the inbox each is in."""
        found: dict[str, str] = {}
        async with self.db.read() as conn:
            for begin in range(0, len(ids), _IN_BATCH):
                batch = list(ids[begin : begin + _IN_BATCH])
                stmt = select(inbox.c.id, inbox.c.box).where(
                    _scope(tenant, box), inbox.c.id.in_(batch)
                )
                found.update({capture_id: name for capture_id, name in await conn.execute(stmt)})
        return found

    async def retag(self, tenant: str, old: str, new: str | None, *, box: str | None = None) -> int:
        """Rename the tag ``old`` (compared ignoring case) to ``new`` on every message of
        the scope, or remove it with ``None``; how many messages changed."""
        changed = 0
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    select(inbox.c.id, inbox.c.tags).where(_scope(tenant, box), has_tag(old))
                )
            ).all()
            for capture_id, tags in rows:
                kept = _renamed(tags or [], old, new)
                if kept != tags:
                    await conn.execute(
                        update(inbox)
                        .where(and_(inbox.c.id == capture_id, inbox.c.tenant == tenant))
                        .values(tags=kept)
                    )
                    changed += 1
        return changed


def _renamed(tags: list[str], old: str, new: str | None) -> list[str]:
    """``tags`` with ``old`` replaced by ``new`` (or dropped), without repeats, sorted as
    tags are kept (ignoring case)."""
    kept: dict[str, str] = {}
    for tag in tags:
        name = new if tag.lower() == old.lower() else tag
        if name is not None:
            kept.setdefault(name.lower(), name)
    return sorted(kept.values(), key=str.lower)
