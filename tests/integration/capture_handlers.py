"""Python capture handlers the handler tests name as ``module:function``."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

SEEN: list[dict[str, Any]] = []  #: every event a handler here was given
GATE: dict[str, asyncio.Event] = {}  #: "open": set it to let ``gated`` return


def keep(event: dict[str, Any]) -> str:
    """Sync, in a worker thread."""
    SEEN.append(event)
    return "CONTINUE"


def typo(event: dict[str, Any]) -> object:
    """Neither CLOSE nor CONTINUE."""
    return 42


async def close(event: dict[str, Any]) -> str:
    SEEN.append(event)
    return "close\n"


def crash(event: dict[str, Any]) -> str:
    raise RuntimeError("the handler broke")


def exits(event: dict[str, Any]) -> str:
    """``sys.exit()`` in a handler: its crash, not the gateway's end."""
    sys.exit("the handler quit")


async def exits_async(event: dict[str, Any]) -> str:
    raise KeyboardInterrupt


async def slow(event: dict[str, Any]) -> None:
    await asyncio.sleep(30)


async def late(event: dict[str, Any]) -> str:
    """Slow, and answers even when its time-out cancels it (a bare ``except:``)."""
    try:
        await asyncio.sleep(30)
    except BaseException:
        return "CONTINUE"
    return "CONTINUE"


async def gated(event: dict[str, Any]) -> str:
    SEEN.append(event)
    await GATE.setdefault("open", asyncio.Event()).wait()
    return "CONTINUE"


CANCELLED: list[str] = []  #: ids of the events whose ``stuck`` handler was cancelled


async def stuck(event: dict[str, Any]) -> str:
    """Runs until cancelled (by a shutdown past its grace), and says so."""
    SEEN.append(event)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        CANCELLED.append(event["id"])
        raise
    return "CONTINUE"


UNBLOCK = threading.Event()  #: set it to let ``blocked`` return
BLOCKED_IN: list[str] = []  #: the threads ``blocked`` ran in


def blocked(event: dict[str, Any]) -> str:
    """A sync handler stuck until :data:`UNBLOCK` (30 s at most)."""
    BLOCKED_IN.append(threading.current_thread().name)
    UNBLOCK.wait(30)
    return "CONTINUE"
