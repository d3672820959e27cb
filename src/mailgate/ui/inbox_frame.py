"""Captured HTML as the inbox page's iframe shows it, and the list's live stream.

The HTML of a captured message is whatever its sender wrote, script included. It is
served from its own path (``/inbox/{id}/html``) with ``Content-Security-Policy:
sandbox`` (CSP Level 3 §6.3.2: an opaque origin, no script, no forms, no popups,
whatever the embedding page says) and shown in an ``<iframe sandbox>`` without
``allow-same-origin`` or ``allow-scripts`` (HTML §4.8.5): two locks, each enough on
its own. Nothing but inline styles and ``data:`` images load, so a tracking pixel
learns nothing until the user asks for remote images (:func:`frame_headers` with
``remote``). ``cid:`` images (RFC 2392) become ``data:`` URIs of their parts: a
request from the sandboxed frame's opaque origin carries no session cookie. A big
message's parts come from files (:meth:`Inbox.part_downloads`), encoded a block at a
time as the page is sent.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence

from mailgate.inbox.events import EventKind, Subscription
from mailgate.inbox.service import Download
from mailgate.mime.parts import MimePart, cid_references
from mailgate.ui.live import MIN_GAP, sse_event

__all__ = ["frame_headers", "inline_images", "referenced", "woken_stream"]

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


#: octets of a part read and encoded at a time (a multiple of 3: no padding between)
_BLOCK = 3 * 256 * 1024


def referenced(html: str) -> Callable[[MimePart], bool]:
    """Whether ``html`` refers to a part by its Content-ID (the parts to inline)."""
    return lambda part: bool(part.content_id) and f"cid:{part.content_id}" in html


def inline_images(
    html: str, images: Sequence[tuple[MimePart, Download]], media_type: Callable[[str], str]
) -> Iterator[bytes]:
    """``html`` in UTF-8 with each ``cid:`` reference to one of ``images`` as a
    ``data:`` URI (the first of the parts with that Content-ID), a block at a time;
    ``media_type`` makes a part's declared type safe to write into an attribute.

    Blocks of about :data:`_BLOCK`: each is read in Starlette's thread pool, and a
    block for each piece between references made 200,000 of them take 91 s."""
    by_cid: dict[str, tuple[MimePart, Download]] = {}
    for part, download in images:
        if part.content_id:
            by_cid.setdefault(part.content_id, (part, download))
    if not by_cid:
        return iter((html.encode(),))
    return _joined(_inlined(html, by_cid, media_type))


def _inlined(
    html: str, by_cid: Mapping[str, tuple[MimePart, Download]], media_type: Callable[[str], str]
) -> Iterator[bytes]:
    pos = 0
    for match in cid_references(by_cid).finditer(html):  # in the parts' order
        part, download = by_cid[match.group().removeprefix("cid:")]
        yield html[pos : match.start()].encode()
        yield f"data:{media_type(part.content_type)};base64,".encode()
        yield from _base64(download)
        pos = match.end()
    yield html[pos:].encode()


def _joined(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` joined into blocks of at least :data:`_BLOCK` (but the last)."""
    block: list[bytes] = []
    size = 0
    for piece in pieces:
        block.append(piece)
        size += len(piece)
        if size >= _BLOCK:
            yield b"".join(block)
            block, size = [], 0
    if block:
        yield b"".join(block)


def _base64(download: Download) -> Iterator[bytes]:
    """A part's bytes in base64, from its file a block at a time (from its start each
    time: a part may be referred to more than once)."""
    if download.file is None:
        yield base64.b64encode(download.content)
        return
    download.file.seek(0)
    while block := download.file.read(_BLOCK):
        yield base64.b64encode(block)


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
