"""A real HTTP receiver for webhook tests: uvicorn serving a bare ASGI app on 127.0.0.1.

``async with Receiver(answer) as rx:`` — ``answer(n, request)`` gives the status (and
optionally a delay in seconds) for the ``n``-th request (1-based); ``rx.requests``
keeps every request received, whatever was answered. ``body(n, request)``, when given,
is the answer's JSON body (``answer <status>`` in plain text otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  #: when it arrived (wall clock)

    def json(self) -> Any:
        return json.loads(self.body)


#: n, request → status, or (status, seconds to wait before answering)
Answer = Callable[[int, Request], int | tuple[int, float]]


def always(status: int) -> Answer:
    return lambda n, request: status


def fail_first(times: int, status: int = 500) -> Answer:
    """``status`` for the first ``times`` requests, then 200."""
    return lambda n, request: status if n <= times else 200


class Receiver:
    def __init__(
        self,
        answer: Answer | None = None,
        *,
        body: Callable[[int, Request], Any] | None = None,
        keep_alive: float = 5.0,
    ) -> None:
        self.answer = answer or always(200)
        self.body = body
        self.keep_alive = keep_alive  #: seconds an idle connection is kept (uvicorn's)
        self.requests: list[Request] = []
        self.port = 0
        self._arrived = asyncio.Condition()
        self._server: LocalServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def wait_for(self, count: int, limit: float = 15.0) -> list[Request]:
        """The first ``count`` requests, once they have arrived."""
        async with asyncio.timeout(limit), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests[:count]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Request(scope["path"], headers, body)
        async with self._arrived:
            self.requests.append(request)
            n = len(self.requests)
            self._arrived.notify_all()
        answer = self.answer(n, request)
        status, delay = answer if isinstance(answer, tuple) else (answer, 0.0)
        if delay:
            await asyncio.sleep(delay)
        reply, kind = f"answer {status}".encode(), b"text/plain"
        if self.body is not None:
            reply, kind = json.dumps(self.body(n, request)).encode(), b"application/json"
        headers_out = [(b"content-type", kind), (b"content-length", b"%d" % len(reply))]
        await send({"type": "http.response.start", "status": status, "headers": headers_out})
        await send({"type": "http.response.body", "body": reply})

    async def __aenter__(self) -> Receiver:
        self._server = LocalServer(self, port=self.port, keep_alive=self.keep_alive)
        self.port = await self._server.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        await self._server.stop()


class LocalServer:
    """uvicorn serving an ASGI app on 127.0.0.1 in the running loop (test peers)."""

    def __init__(self, app: Any, *, port: int = 0, keep_alive: float = 5.0) -> None:
        self.app, self.port, self.keep_alive = app, port, keep_alive
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen; the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=self.keep_alive,  # type: ignore[arg-type]  # a float works
        )
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the test server stopped during start-up")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._server.force_exit = True
        await self._task
