"""A gateway run from synchronous code: its own thread and event loop.

Playwright's sync API (the admin UI's browser tests, ``scripts/screenshots.py``) cannot
run inside an event loop, so the gateway it drives runs beside it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from mailgate.app import Gateway

__all__ = ["GatewayThread"]

T = TypeVar("T")


class GatewayThread:
    """A :class:`Gateway` running in its own thread and event loop; a context manager
    that starts it and stops it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self.call(self.gateway.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.gateway.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the gateway's loop and return its result (30 s at most)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def url(self) -> str:
        return self.gateway.http_url
