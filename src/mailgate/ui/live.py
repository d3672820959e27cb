"""Live pages: a wake-up for open streams, and Server-Sent Events of HTML fragments.

A page holds ``<section sse-swap="NAME">`` elements under an ``hx-ext="sse"``
element whose ``sse-connect`` is a stream of this module: the stream renders every
fragment, sends those whose HTML changed as ``event: NAME`` (htmx swaps them in), then
sleeps until :class:`Pulse` is poked (something changed: mail queued, an outcome
recorded) or ``refresh`` seconds pass. The HTML format of the stream is the
WHATWG HTML "Server-sent events" section (§9.2): one ``data:`` line per line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

__all__ = ["Pulse", "fragment_stream", "sse_event"]

#: the least time between two renders of one stream, however often the pulse beats
MIN_GAP = 0.5


class Pulse:
    """Wakes every open stream; :meth:`close` ends them (before the web server stops,
    which would otherwise wait for them)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def poke(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self.poke()

    def beat(self) -> asyncio.Event:
        """Set at the next :meth:`poke`: take it before reading, wait on it after, and
        a change made in between is not missed."""
        return self._event


async def _until(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def sse_event(name: str, html: str) -> str:
    lines = html.strip().splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def fragment_stream(
    render: Callable[[], Awaitable[Mapping[str, str]]],
    pulse: Pulse,
    refresh: float,
) -> AsyncIterator[str]:
    """The fragments ``render`` returns by name, each sent when it changed."""
    sent: dict[str, str] = {}
    yield "retry: 2000\n\n"  # reconnect after 2 s when the connection drops
    while not pulse.closed:  # a client gone: the next write ends the response
        beat = pulse.beat()
        for name, html in (await render()).items():
            if sent.get(name) != html:
                sent[name] = html
                yield sse_event(name, html)
        await asyncio.sleep(MIN_GAP)
        await _until(beat, refresh)
