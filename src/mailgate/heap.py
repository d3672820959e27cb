"""Giving the C heap's free memory back to the system after big messages.

A big message's buffers (its copy, the parse's, the capture event's) are freed once it is
stored, but glibc's malloc keeps what they freed for the next allocations: its mmap
threshold grows to the largest block freed (up to 32 MiB), so the next 10 MB buffers
come from the heap, and a heap is given back only from its top. After fifty 10 MB
messages `mailgate dev` stayed at 140–311 MB with nothing to do (idle: 71 MB).
``malloc_trim(0)`` gives back every free page of every arena: it runs in a worker
thread once no big message has ended for a second, so after a burst, not during it. (A
trim a second during the burst raised its peak by 40-90 MB: it locks each arena in
turn, and a thread that finds its arena locked gets a new one.)

Without glibc (musl, macOS) there is no ``malloc_trim`` and :meth:`HeapTrim.soon` does
nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

__all__ = ["TRIM", "HeapTrim"]


class HeapTrim:
    """Trims the heap once :meth:`soon` has not been called for ``after`` seconds."""

    def __init__(self, after: float = 1.0) -> None:
        self.after = after
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[asyncio.Future[None]] = set()

    def soon(self) -> None:
        """A big message has ended: trim ``after`` seconds from now, unless another ends
        before then (on this event loop)."""
        if _malloc_trim() is None:
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None and self._loop is loop:
            self._timer.cancel()  # put off: big messages are still coming
        self._loop, self._timer = loop, loop.call_later(self.after, self._trim)

    def _trim(self) -> None:
        self._timer = None
        trimming = asyncio.ensure_future(asyncio.to_thread(trim))
        self._running.add(trimming)  # kept until done (the loop holds tasks weakly)
        trimming.add_done_callback(self._running.discard)


def trim() -> None:
    """``malloc_trim(0)``, where the C library has it."""
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes  # only once a big message came: an idle server never loads it

    try:
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return function


TRIM = HeapTrim()
"""The process's one heap, trimmed after the big messages of every SMTP listener."""
