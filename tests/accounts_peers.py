"""Peers for the account tests: Postmark's ``GET /server`` (the token check) on a real
socket, and account bodies pointing at a real aiosmtpd :class:`~tests.peers.Upstream`."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.peers import Upstream

__all__ = ["PASSWORD", "PostmarkServerPeer", "smtp_account"]

PASSWORD = "Upstream-Pa55word-7f3a"  #: the upstream's real password; tests grep for it


def smtp_account(up: Upstream, id: str = "agent1", **changes: Any) -> dict[str, Any]:
    """An account body for ``up`` (self-signed test certificate: ``verify_tls`` off)."""
    security = {None: "none", "starttls": "starttls", "implicit": "ssl"}[up.tls]
    body = {
        "id": id,
        "from": [f"{id}@example.com"],
        "smtp_host": "127.0.0.1",
        "smtp_port": up.port,
        "smtp_security": security,
        "smtp_auth": "plain",
        "smtp_username": "agent",
        "smtp_password": PASSWORD,
        "verify_tls": False,
        "auth_plaintext": up.tls is None,
    }
    body.update(changes)
    return body


class PostmarkServerPeer:
    """Answers ``GET /server`` as Postmark does: 200 with the server's details for the
    right ``X-Postmark-Server-Token``, 401 ErrorCode 10 otherwise."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> PostmarkServerPeer:
        app = Starlette(routes=[Route("/server", self._server_info, methods=["GET"])])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task

    async def _server_info(self, request: Request) -> JSONResponse:
        if request.headers.get("x-postmark-server-token") != self.token:
            body = {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
            return JSONResponse(body, status_code=401)
        return JSONResponse({"ID": 1, "Name": "test server"})
