"""Captured HTML as the inbox page's iframe shows it, and the list's live stream.

The HTML of a captured message is whatever its sender wrote, script included. It is
served from its own path (``/inbox/{id}/html``) with ``Content-Security-Policy:
sandbox`` (CSP Level 3 §6.3.2: an opaque origin, no script, no forms, no popups,
whatever the embedding page says) and shown in an ``<iframe sandbox>`` without
``allow-same-origin`` or ``allow-scripts`` (HTML §4.8.5): two locks, each enough on
its own. Nothing but inline styles and ``data:`` images load, so a tracking pixel
learns nothing until the user asks for remote images (:func:`frame_headers` with
``remote``). ``cid:`` images (RFC 2392) become ``data:`` URIs of their parts: a
request from the sandboxed frame's opaque origin carries no session cookie.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from mailgate.inbox.events import EventKind, Subscription
from mailgate.mime.parts import PartList
from mailgate.ui.live import MIN_GAP, sse_event

__all__ = ["frame_headers", "inline_images", "woken_stream"]

#: the frame's policy; ``cid:`` is there for a client that resolves it itself
_FRAME_CSP = (
    "sandbox; default-src 'none'; img-src data: cid:{remote}; style-src 'unsafe-inline';"
    " frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


def frame_headers(*, remote: bool) -> dict[str, str]:
    """The captured HTML's headers (all of them: the UI's own would forbid the framing
    and its inline styles); ``remote``: images may load over http(s)."""
    return {
        "Content-Security-Policy": _FRAME_CSP.format(remote=" https: http:" if remote else ""),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "SAMEORIGIN",
        "Referrer-Policy": "no-referrer",  # a remote image learns nothing of this page
        "Cache-Control": "no-store",
    }


def inline_images(html: str, parts: PartList, media_type: Callable[[str], str]) -> str:
    """``html`` with each ``cid:`` reference to one of its parts as a ``data:`` URI;
    ``media_type`` makes a part's declared type safe to write into an attribute."""
    for part in (*parts.inline, *parts.attachments):
        if part.content_id and f"cid:{part.content_id}" in html:
            data = base64.b64encode(part.content).decode("ascii")
            uri = f"data:{media_type(part.content_type)};base64,{data}"
            html = html.replace(f"cid:{part.content_id}", uri)
    return html


async def woken_stream(
    render: Callable[[], Awaitable[Mapping[str, str]]],
    sub: Subscription,
    refresh: float,
    stopping: Callable[[], bool],
) -> AsyncIterator[str]:
    """Like :func:`mailgate.ui.live.fragment_stream`, woken by the inbox's events
    (a capture, delete, clear, read or tag change) instead of the dashboard's pulse;
    a burst of captures is one render (``MIN_GAP``). Ends when the subscription closes
    (the gateway stops, or this reader fell behind: the browser reconnects)."""
    sent: dict[str, str] = {}
    with sub:
        yield "retry: 2000\n\n"
        while not sub.closed and not stopping():
            for name, html in (await render()).items():
                if sent.get(name) != html:
                    sent[name] = html
                    yield sse_event(name, html)
            event = await sub.next(within=refresh)
            if event is not None and event.kind is EventKind.LOST:
                return
            await asyncio.sleep(MIN_GAP)
            while not sub.closed and await sub.next(within=0) is not None:
                pass  # what came meanwhile is in the next render
