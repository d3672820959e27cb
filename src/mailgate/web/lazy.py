"""An ASGI app that builds the real one when it is first needed.

``mailgate dev`` is a capture server first: most of its life nobody looks at the web
side, yet FastAPI, Starlette, Jinja2 and the routes' modules are about 25 MiB of a
process's memory (docs/benchmarks.md, "What the idle RSS is made of"). uvicorn
serves a :class:`LazyApp` instead; the first HTTP request or WebSocket imports and
builds the web app in a worker thread (the loop goes on serving SMTP sessions
meanwhile), and requests arriving during the build wait for that one build. Health
probes are answered without it (:mod:`mailgate.web.probes`).
``serve`` calls :meth:`LazyApp.load` before it listens, so its first request is not
the slow one.

The real app keeps its resources in lifespan state (``request.state.services``). The
lifespan uvicorn runs at start is answered here, as the real app does not exist yet;
the real app's own lifespan is entered once it is built, its state put into every
request's ``scope["state"]`` (what uvicorn does with the state of a lifespan it ran
itself), and left when uvicorn's lifespan shuts down.

This module imports neither FastAPI nor Starlette: the ASGI types are spelt out here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mailgate.web.probes import Probes

__all__ = ["LazyApp"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class App(Protocol):
    """A Starlette (FastAPI) app, as far as this module uses one."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    @property
    def router(self) -> Any: ...  # .lifespan_context(app): the app's lifespan


class LazyApp:
    """ASGI: builds ``build()`` on the first request (or :meth:`load`), then forwards.

    ``build`` runs in a worker thread, so it must only import and construct: nothing
    in it may need the event loop. The built app's lifespan runs on the loop.
    """

    def __init__(self, build: Callable[[], App], probes: Probes | None = None) -> None:
        """``probes``: answered without building the app while it is not built
        (:mod:`mailgate.web.probes`)."""
        self._build = build
        self._probes = probes
        self._app: App | None = None
        self._state: dict[str, Any] = {}
        self._lifespan: AbstractAsyncContextManager[Any] | None = None
        self._loading: asyncio.Task[App] | None = None
        self._stopped = False

    @property
    def loaded(self) -> bool:
        """The real app is built and its lifespan entered."""
        return self._app is not None

    async def load(self) -> App:
        """The real app, built now unless it was; one build however many callers wait.
        A build that failed is tried again by the next caller."""
        if self._app is not None:
            return self._app
        if self._stopped:
            raise RuntimeError("the web app has shut down")
        if self._loading is None:
            self._loading = asyncio.create_task(self._load(), name="mailgate-web-build")
        loading = self._loading
        try:
            # shielded: a request that goes away must not cancel others' build
            return await asyncio.shield(loading)
        except BaseException:
            if loading.done() and self._loading is loading and self._app is None:
                self._loading = None
            raise

    async def _load(self) -> App:
        app = await asyncio.to_thread(self._build)
        lifespan = app.router.lifespan_context(app)
        state = await lifespan.__aenter__()
        self._lifespan, self._state = lifespan, dict(state or {})
        self._app = app
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        if self._app is None and self._probes is not None:
            answer = self._probes.answer(scope)
            if answer is not None:
                await answer(send)
                return
        app = self._app or await self.load()
        if self._state:
            scope["state"] = {**scope.get("state", {}), **self._state}
        await app(scope, receive, send)

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        """uvicorn's lifespan (ASGI lifespan spec): start-up needs nothing of the real
        app; shut-down leaves its lifespan, if it was ever entered."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.aclose()
                except Exception as exc:
                    log.exception("the web app's lifespan failed at shut-down")
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Leave the real app's lifespan (after a build still running, if one is)."""
        self._stopped = True
        if self._loading is not None and not self._loading.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._loading)
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)
