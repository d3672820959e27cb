"""Live inbox events in this process: what ``GET /inbox/wait`` and ``/inbox/events`` hear.

The inbox publishes every capture, delete and clear here once it is committed.
Each subscriber has its own bounded queue: publishing never waits, and a reader
that falls :data:`QUEUE_LIMIT` events behind loses its backlog and is told so once
(:attr:`EventKind.LOST`) — a waiter then reads the store again, an event stream
ends (its client reconnects) — so one slow reader can neither hold up capture nor
grow memory.

Mail captured or pruned by another process sharing the database is not published
here (the waiters also read the store every second).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from mailgate.store import CapturedRecord

__all__ = ["QUEUE_LIMIT", "EventKind", "InboxEvent", "InboxEvents", "Subscription"]

QUEUE_LIMIT = 256  #: events a subscriber may fall behind before it loses them


class EventKind(enum.StrEnum):
    NEW = "new"  #: a message was captured (``record``)
    DELETE = "delete"  #: one message was deleted (``capture_id``)
    CLEAR = "clear"  #: messages were deleted together (``count``; ``box`` when one inbox's)
    PRUNE = "prune"  #: retention deleted ``count`` of inbox ``box``'s oldest messages
    #: a message was marked read/unread (``read``) or retagged (``tags``); without
    #: ``capture_id`` many were marked at once (a whole inbox, or what a search matched)
    UPDATE = "update"
    LOST = "lost"  #: this subscriber fell behind and events were dropped


@dataclass(frozen=True, slots=True)
class InboxEvent:
    kind: EventKind
    tenant: str | None  #: None: every tenant's (a clear of the whole store)
    record: CapturedRecord | None = None
    capture_id: str | None = None
    box: str | None = None
    count: int = 0
    read: bool | None = None  #: UPDATE: read (True) or unread (False); None: unchanged
    tags: tuple[str, ...] | None = None  #: UPDATE: the tags now; None: unchanged
    partial: bool = False  #: CLEAR: only what a search matched, not the whole scope


class Subscription:
    """One reader's queue of one tenant's events; a context manager that unsubscribes."""

    def __init__(self, hub: InboxEvents, tenant: str, limit: int) -> None:
        self.tenant = tenant
        self._hub = hub
        self._limit = limit
        self._items: deque[InboxEvent] = deque()
        self._lost = False
        self._ready = asyncio.Event()
        self.closed = False  #: unsubscribed, or the gateway is stopping: no more events

    async def next(self, within: float | None = None) -> InboxEvent | None:
        """The next event; None when ``within`` seconds pass without one, or at once
        when the subscription is closed (see :attr:`closed`)."""
        while not self._items and not self._lost and not self.closed:
            self._ready.clear()
            try:
                async with asyncio.timeout(within):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self._lost:
            self._lost = False
            return InboxEvent(EventKind.LOST, self.tenant)
        return self._items.popleft() if self._items else None

    def put(self, event: InboxEvent) -> None:
        """Queue ``event``; past the limit the backlog goes and the reader hears LOST."""
        if self.closed:
            return
        if len(self._items) >= self._limit:
            self._items.clear()
            self._lost = True
        else:
            self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._items.clear()
            self._hub.unsubscribe(self)
            self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class InboxEvents:
    """The hub: who listens to which tenant. Used from the event loop's thread only."""

    def __init__(self, *, queue_limit: int = QUEUE_LIMIT) -> None:
        self.queue_limit = queue_limit
        self._subscribers: dict[str, set[Subscription]] = {}
        self.closed = False

    def subscribe(self, tenant: str) -> Subscription:
        """A new reader of ``tenant``'s events (closed at once if the hub is)."""
        sub = Subscription(self, tenant, self.queue_limit)
        if self.closed:
            sub.closed = True
        else:
            self._subscribers.setdefault(tenant, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.tenant)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.tenant]

    def publish(self, event: InboxEvent) -> None:
        """Hand ``event`` to its tenant's readers (every reader's when tenant is None)."""
        if event.tenant is None:
            targets = [s for subs in self._subscribers.values() for s in subs]
        else:
            targets = list(self._subscribers.get(event.tenant, ()))
        for sub in targets:
            sub.put(event)

    def count(self) -> int:
        """Readers subscribed now, every tenant's."""
        return sum(len(subs) for subs in self._subscribers.values())

    def close(self) -> None:
        """The gateway is stopping: every reader is closed, so waits and streams end
        before the web server waits for its connections."""
        self.closed = True
        for sub in [s for subs in self._subscribers.values() for s in subs]:
            sub.close()
