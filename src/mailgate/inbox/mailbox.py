"""One mailbox as Mailpit's API sees it: pages by offset with totals, bulk read/unread,
tags and deletes, the latest message, and its MIME parts numbered as Mailpit numbers them.

A mailbox is a tenant's captured mail, or one of its inboxes' (``box``): the per-inbox
base URL ``/mailpit/{inbox}`` makes one inbox a whole Mailpit. Changes that Mailpit
makes one message at a time go through :class:`~mailgate.inbox.Inbox` (so deletes
remove attachment files and are published to waiters); the rest are single queries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailgate.errors import InvalidInput, NotFound
from mailgate.inbox.events import EventKind, InboxEvent
from mailgate.inbox.search import Term, parse_query
from mailgate.inbox.service import CaptureMeta, Download, Inbox
from mailgate.inbox.sorting import clean_tag
from mailgate.mime.parts import PartList
from mailgate.store import CapturedRecord
from mailgate.store.inbox_bulk import Counts, InboxBulk

__all__ = ["Mailbox", "Page", "search_terms"]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[CapturedRecord]
    mailbox: Counts  #: the whole mailbox
    matched: Counts  #: what the search matched (the mailbox without one)
    tags: list[str]  #: every tag in the mailbox


def search_terms(query: str, tz: str | None = None) -> tuple[Term, ...]:
    """Mailpit's search syntax, dates read in ``tz`` (an IANA name; UTC without one)."""
    zone: tzinfo = UTC
    if tz:
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"unknown time zone {tz!r}") from None
    return parse_query(query, tz=zone)


class Mailbox:
    def __init__(self, inbox: Inbox, bulk: InboxBulk) -> None:
        self.inbox = inbox
        self.bulk = bulk

    @classmethod
    def of(cls, inbox: Inbox) -> Mailbox:
        """The mailbox view of ``inbox``, on the same database."""
        return cls(inbox, InboxBulk(inbox.store.db))

    async def capture(self, raw: bytes, meta: CaptureMeta, box: str | None) -> CapturedRecord:
        """Capture ``raw`` as the capture transport does; into ``box`` when given (mail
        sent through a per-inbox address lands in that inbox whatever sorting says)."""
        return await self.inbox.capture(raw, replace(meta, box=box) if box else meta)

    async def page(
        self,
        tenant: str,
        box: str | None,
        *,
        query: Sequence[Term] | None = None,
        start: int = 0,
        limit: int = 50,
    ) -> Page:
        """Newest first from ``start``; ``query`` None lists everything."""
        terms = query or ()
        records = await self.bulk.page(tenant, box=box, query=terms, start=start, limit=limit)
        mailbox = await self.bulk.counts(tenant, box=box)
        matched = mailbox if query is None else await self.bulk.counts(tenant, box=box, query=terms)
        tags = list(await self.bulk.tag_counts(tenant, box=box))
        return Page(records, mailbox, matched, tags)

    async def latest(self, tenant: str, box: str | None, query: Sequence[Term] = ()) -> str:
        """The newest message's id (of those ``query`` matches); NotFound when none."""
        found = await self.bulk.page(tenant, box=box, query=query, limit=1)
        if not found:
            raise NotFound("Message not found")
        return found[0].id

    async def get(
        self, capture_id: str, tenant: str, box: str | None, *, mark_read: bool = False
    ) -> CapturedRecord:
        return await self.inbox.get(capture_id, tenant, box=box, mark_read=mark_read)

    async def raw(self, capture_id: str, tenant: str, box: str | None) -> bytes:
        if box is not None:
            await self.inbox.get(capture_id, tenant, box=box)  # NotFound outside the box
        return await self.inbox.raw(capture_id, tenant)

    async def header_block(self, capture_id: str, tenant: str, box: str | None) -> bytes:
        """The message's header block (:meth:`Inbox.header_block`)."""
        if box is not None:
            await self.inbox.get(capture_id, tenant, box=box)  # NotFound outside the box
        return await self.inbox.header_block(capture_id, tenant)

    async def raw_download(self, capture_id: str, tenant: str, box: str | None) -> Download:
        """:meth:`raw` for a download (a big message through a file)."""
        if box is not None:
            await self.inbox.get(capture_id, tenant, box=box)  # NotFound outside the box
        return await self.inbox.raw_download(capture_id, tenant)

    async def parts(self, capture_id: str, tenant: str, box: str | None) -> PartList:
        """The message's attachments and inline parts (:meth:`Inbox.parts`)."""
        if box is not None:
            await self.inbox.get(capture_id, tenant, box=box)  # NotFound outside the box
        return await self.inbox.parts(capture_id, tenant)

    async def part_download(
        self, capture_id: str, tenant: str, box: str | None, part_id: str
    ) -> Download:
        """One part's decoded bytes for a download (:meth:`Inbox.part_download`)."""
        if box is not None:
            await self.inbox.get(capture_id, tenant, box=box)  # NotFound outside the box
        return await self.inbox.part_download(capture_id, part_id, tenant)

    async def set_read(
        self,
        tenant: str,
        box: str | None,
        read: bool,
        *,
        ids: Sequence[str] | None = None,
        query: Sequence[Term] = (),
    ) -> int:
        """Mark the ``ids`` (else what ``query`` matches, else all) read or unread; the
        readers hear of each of the ``ids`` in the mailbox, as Mailpit tells of each, or
        of a change of many at once."""
        changed = await self.bulk.set_read(tenant, read, box=box, ids=ids, query=query)
        if ids is None:
            if changed:
                self._publish(InboxEvent(EventKind.UPDATE, tenant, box=box, read=read))
            return changed
        for capture_id, in_box in (await self.bulk.boxes_of(tenant, ids, box=box)).items():
            event = InboxEvent(
                EventKind.UPDATE, tenant, capture_id=capture_id, box=in_box, read=read
            )
            self._publish(event)
        return changed

    def _publish(self, event: InboxEvent) -> None:
        self.inbox.events.publish(event)

    async def delete(self, tenant: str, box: str | None, ids: Sequence[str] | None) -> int:
        """Delete the ``ids`` (unknown ones are skipped, as Mailpit skips them), or the
        whole mailbox with ``None``."""
        if ids is None:
            return await self.inbox.clear(tenant, box=box)
        deleted = 0
        for capture_id in dict.fromkeys(ids):
            with contextlib.suppress(NotFound):
                await self.inbox.delete(capture_id, tenant, box=box)
                deleted += 1
        return deleted

    async def delete_matching(self, tenant: str, box: str | None, query: str) -> int:
        """Delete what ``query`` matches (nothing for a query without a term)."""
        return await self.inbox.clear(tenant, box=box, query=query)

    async def set_tags(
        self, tenant: str, box: str | None, ids: Sequence[str], tags: Sequence[str]
    ) -> None:
        """Replace the tags of each of ``ids`` (unknown ids are skipped)."""
        for capture_id in dict.fromkeys(ids):
            with contextlib.suppress(NotFound):
                await self.inbox.update(capture_id, tenant, box=box, tags=tags)

    async def counts(self, tenant: str, box: str | None) -> Counts:
        """The mailbox's total and unread messages."""
        return await self.bulk.counts(tenant, box=box)

    async def tag_counts(self, tenant: str, box: str | None) -> dict[str, int]:
        return await self.bulk.tag_counts(tenant, box=box)

    async def rename_tag(self, tenant: str, box: str | None, old: str, new: str) -> int:
        """Rename ``old`` (ignoring case) to ``new``, cleaned as tags are."""
        name = clean_tag(new)
        if not name:
            raise InvalidInput(f"invalid tag name {new!r}")
        return await self.bulk.retag(tenant, old, name, box=box)

    async def delete_tag(self, tenant: str, box: str | None, tag: str) -> int:
        return await self.bulk.retag(tenant, tag, None, box=box)
