"""``GET /inbox/wait``: the newest captured message that matches, as soon as there is one.

A waiter subscribes to the inbox's events *before* it first reads the store, so a
message captured while it reads is not missed. Then it sleeps until either an
event arrives — a capture in this process is matched in memory, and read from the
store only when a search query must judge it — or :data:`RECHECK_SECONDS` pass, when
it reads the store again for mail another process sharing the database captured.
One read per wake-up and none between: a thousand idle waiters cost a thousand
small queries a second, and nothing when no mail comes.

Each read after the first looks only at mail newer than :data:`LOOKBACK_SECONDS`
before the previous read began (ids are UUIDv7: they sort by capture time), so a
message that took a while between its id and its commit is still seen.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Protocol

from mailgate.errors import InvalidInput
from mailgate.inbox.events import EventKind, Subscription
from mailgate.store import CapturedRecord

__all__ = ["LOOKBACK_SECONDS", "RECHECK_SECONDS", "Since", "WaitFor", "id_floor", "wait_for"]

RECHECK_SECONDS = 1.0  #: how often a waiter reads the store for other processes' mail
LOOKBACK_SECONDS = 60.0  #: a later read starts this far before the previous one began
_PAGE = 100
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class Since:
    """``?since=``: an id (mail captured after it) or a time (mail received after it)."""

    after_id: str  #: the floor: only ids above it count
    after_time: datetime | None = None

    @classmethod
    def parse(cls, value: str) -> Since:
        """An ISO 8601 time (a zone, or UTC) or a captured message's id."""
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            if not _ID.match(value.lower()):
                raise InvalidInput("since is neither an ISO 8601 time nor a message id") from None
            return cls(value.lower())
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return cls(id_floor(when.timestamp()), when)

    def admits(self, record: CapturedRecord) -> bool:
        if self.after_time is not None:
            return record.received_at > self.after_time
        return record.id > self.after_id


def id_floor(seconds: float) -> str:
    """The lowest UUIDv7 of that moment (ms): every id made then or later sorts above it."""
    ms = max(0, int(seconds * 1000))
    h = f"{ms:012x}"[-12:] + "0" * 20
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class WaitFor:
    """What the waited-for message looks like; every given part must hold.

    ``to`` and ``sender`` with an ``@`` are whole addresses (any case) among the
    envelope's and the header's; without one, part of one (``@example.com``). ``query``
    is the inbox list's search, judged by the store.
    """

    to: str | None = None
    sender: str | None = None
    subject: str | None = None
    query: str | None = None
    box: str | None = None
    since: Since | None = None

    def matches(self, record: CapturedRecord) -> bool:
        """Everything but ``query`` (which needs the store)."""
        to, sender, subject = (
            v.strip().lower() if v else None for v in (self.to, self.sender, self.subject)
        )
        if self.since is not None and not self.since.admits(record):
            return False
        if self.box is not None and record.box != self.box:
            return False
        if subject and subject not in record.subject.lower():
            return False
        if to and not _names(to, [*record.rcpt_to, *_addresses(record.to_header)]):
            return False
        return not sender or _names(sender, [record.mail_from, *_addresses(record.from_header)])


def _addresses(header: str) -> list[str]:
    return [addr for _, addr in getaddresses([header]) if addr]


def _names(wanted: str, addresses: list[str]) -> bool:
    if "@" in wanted and not wanted.startswith("@"):
        return any(a.lower() == wanted for a in addresses)
    return any(wanted in a.lower() for a in addresses)


class Lister(Protocol):
    """What a waiter reads: the inbox list (``Inbox.list``)."""

    async def list(
        self,
        tenant: str,
        *,
        query: str | None = None,
        box: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[CapturedRecord], str | None]: ...


async def wait_for(
    inbox: Lister,
    sub: Subscription,
    want: WaitFor,
    *,
    within: float,
    recheck: float = RECHECK_SECONDS,
) -> CapturedRecord | None:
    """The newest message ``want`` matches, waiting up to ``within`` seconds for one;
    None if none came (or the gateway is stopping). ``sub``: the tenant's events,
    subscribed before this is called."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    reader = _Reader(inbox, sub.tenant, want)
    found = await reader.read()
    next_read = loop.time() + recheck
    while found is None and not sub.closed:
        now = loop.time()
        if now >= deadline:
            return None
        event = await sub.next(within=max(0.0, min(deadline, next_read) - now))
        lost = event is not None and event.kind is EventKind.LOST
        if lost or loop.time() >= next_read:  # the read sees this event's message too
            found = await reader.read()
            next_read = loop.time() + recheck
        elif event is not None and event.record is not None and want.matches(event.record):
            found = event.record if want.query is None else await reader.read()
    return found


class _Reader:
    """The store reads of one waiter, each looking only at mail it has not seen."""

    def __init__(self, inbox: Lister, tenant: str, want: WaitFor) -> None:
        self.inbox, self.tenant, self.want = inbox, tenant, want
        self.floor = want.since.after_id if want.since is not None else ""

    async def read(self) -> CapturedRecord | None:
        began = time.time()
        found = await self._newest_match()
        self.floor = max(self.floor, id_floor(began - LOOKBACK_SECONDS))
        return found

    async def _newest_match(self) -> CapturedRecord | None:
        cursor: str | None = None
        while True:
            page, cursor = await self.inbox.list(
                self.tenant, query=self.want.query, box=self.want.box, limit=_PAGE, cursor=cursor
            )
            for record in page:
                if record.id <= self.floor:
                    return None
                if self.want.matches(record):
                    return record
            if cursor is None:
                return None
