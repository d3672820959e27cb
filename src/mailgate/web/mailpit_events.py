"""``/mailpit/api/events``: Mailpit's WebSocket of live changes, as its web UI and
clients read it — ``/mailpit/{inbox}/api/events`` for one inbox's.

Each change is one text frame ``{"Type", "Data"}`` as Mailpit 1.30 sends it
(``server/websockets``, ``internal/storage``): ``new`` with the message summary of
the list endpoint; ``delete`` ``{ID}``; ``update`` ``{ID, Read}`` or ``{ID, Tags}``;
``truncate`` (the mailbox emptied) and ``prune`` (messages went: read the list again),
both with ``Data`` null; and ``stats`` ``{Total, Unread, Version}`` a quarter of a
second after a change, at most four a second. The hub's bounded queue keeps a slow
reader from holding up capture; one that falls behind is closed (1013) and
reconnects, as Mailpit's UI does after any close. Keep-alive is the server's ping.

The handshake is authenticated as every ``/mailpit`` request (a token header, or HTTP
Basic with the token as password: what a browser and Mailpit's clients send), and a
browser's ``Origin`` must be this host (Mailpit checks it too): a page elsewhere must
not read the mail through the visitor's browser.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

from mailgate import __version__
from mailgate.inbox.events import EventKind, InboxEvent, Subscription
from mailgate.inbox.mailbox import Mailbox
from mailgate.web.deps import get_services, require_token
from mailgate.web.mailpit_json import summary_json

__all__ = ["STATS_DELAY", "mailpit_messages", "router"]

STATS_DELAY = 0.25  #: seconds from a change to its ``stats`` (Mailpit's rate limit)
_BOX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

router = APIRouter()


@router.websocket("/api/events")
async def events(websocket: WebSocket) -> None:
    box = websocket.path_params.get("inbox")
    if box is not None and not _BOX.match(box):
        await _deny(websocket, 404, "404 page not found")
        return
    services = get_services(websocket)
    try:
        tenant = await require_token(websocket, services)
    except HTTPException as exc:
        await _deny(websocket, exc.status_code, str(exc.detail), exc.headers)
        return
    if not _same_origin(websocket):
        await _deny(websocket, 403, "cross-origin WebSocket refused")
        return
    with services.inbox.subscribe(tenant) as sub:
        await websocket.accept()
        reader = _Reader(sub, _Scope(tenant, box, Mailbox.of(services.inbox)))
        await _until_either(reader.relay(websocket), _drain(websocket))


@dataclass(frozen=True, slots=True)
class _Scope:
    tenant: str
    box: str | None
    mailbox: Mailbox

    async def stats(self) -> dict[str, Any]:
        counts = await self.mailbox.counts(self.tenant, self.box)
        return {"Total": counts.total, "Unread": counts.unread, "Version": __version__}


class _Reader:
    """One socket's side of the hub: events in, Mailpit's frames out."""

    def __init__(self, sub: Subscription, scope: _Scope) -> None:
        self.sub, self.scope = sub, scope
        self.stats_at: float | None = None  #: when the pending ``stats`` is due

    async def relay(self, websocket: WebSocket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = None if self.stats_at is None else max(0.0, self.stats_at - loop.time())
            event = await self.sub.next(within=wait)
            if self.sub.closed:  # the gateway is stopping
                await websocket.close(1001)
                return
            if event is not None and event.kind is EventKind.LOST:
                await websocket.close(1013, "fell behind: reconnect")
                return
            if event is not None:
                messages, counted = await _messages(event, self.scope.box)
                for message in messages:
                    await websocket.send_text(_frame(message))
                if counted and self.stats_at is None:
                    self.stats_at = loop.time() + STATS_DELAY
            if self.stats_at is not None and loop.time() >= self.stats_at:
                self.stats_at = None
                await websocket.send_text(_frame(_message("stats", await self.scope.stats())))


#: a new message above this size has its summary made in a worker thread (it reads the
#: HTML and the addresses: 40,000 Cc held the event loop); a small one's on the loop,
#: cheaper than the hand-off, as the events of a busy capture server are
_SUMMARY_ON_LOOP = 64 * 1024


async def _messages(event: InboxEvent, box: str | None) -> tuple[list[dict[str, Any]], bool]:
    """:func:`mailpit_messages`, off the event loop for a big message."""
    if event.record is not None and event.record.size > _SUMMARY_ON_LOOP:
        return await asyncio.to_thread(mailpit_messages, event, box)
    return mailpit_messages(event, box)


def mailpit_messages(event: InboxEvent, box: str | None) -> tuple[list[dict[str, Any]], bool]:
    """What a socket of mailbox ``box`` (None: the tenant's mail) is sent for ``event``,
    and whether the mailbox's counts may have changed (a ``stats`` follows)."""
    if event.kind is EventKind.NEW:
        record = event.record
        if record is None or not _mine(record.box, box):
            return [], False
        return [_message("new", summary_json(record))], True
    if not _mine(event.box, box):
        return [], False
    if event.kind is EventKind.DELETE:
        return [_message("delete", {"ID": event.capture_id})], True
    if event.kind is EventKind.UPDATE:
        return _updates(event), True
    if event.kind is EventKind.CLEAR:
        emptied = not event.partial and event.box in (None, box)
        return [_message("truncate" if emptied else "prune", None)], True
    if event.kind is EventKind.PRUNE:
        return [_message("prune", None)], True
    return [], False


def _updates(event: InboxEvent) -> list[dict[str, Any]]:
    """One message's read state and tags, each as Mailpit tells it; none for a change
    of many at once (Mailpit sends only ``stats`` then)."""
    if event.capture_id is None:
        return []
    found: list[dict[str, Any]] = []
    if event.read is not None:
        found.append(_message("update", {"ID": event.capture_id, "Read": event.read}))
    if event.tags is not None:
        found.append(_message("update", {"ID": event.capture_id, "Tags": list(event.tags)}))
    return found


def _mine(event_box: str | None, box: str | None) -> bool:
    """The socket's mailbox is the tenant's, or the event is of its inbox (or of all)."""
    return box is None or event_box is None or event_box == box


def _message(kind: str, data: Any) -> dict[str, Any]:
    return {"Type": kind, "Data": data}


def _frame(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


async def _drain(websocket: WebSocket) -> None:
    """Read until the client goes: Mailpit's clients send nothing that matters."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _until_either(*work: Any) -> None:
    """Run ``work`` until the first ends (the client left, or the relay closed)."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and isinstance(task.exception(), WebSocketDisconnect):
            continue  # a send to a client that had just gone
        task.result()


def _same_origin(websocket: WebSocket) -> bool:
    """No ``Origin`` (not a browser), or the page came from this host and port."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


async def _deny(
    websocket: WebSocket, status: int, text: str, headers: Mapping[str, str] | None = None
) -> None:
    """Refuse the handshake with an HTTP answer, as Mailpit does (a close before
    ``accept`` where the server cannot send one)."""
    response = PlainTextResponse(text, status_code=status, headers=headers)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008)
