"""A local server speaking Postmark's ``POST /email`` contract, on a real socket.

It checks what Postmark checks (postmarkapp.com/developer/api/overview): the
``X-Postmark-Server-Token`` header (401, ErrorCode 10), a JSON body (422,
ErrorCode 409/402), From and To present (422, ErrorCode 300), inactive
recipients (422 ErrorCode 406 when all are, else 200 "Message OK, but will not
deliver to these inactive addresses: …"). It records every accepted request and
can be scripted to answer anything (401, 422, 429 with Retry-After, 500) next.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.http_peer import LocalServer

__all__ = ["PostmarkPeer", "Scripted"]


@dataclass(frozen=True)
class Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    #: when given, the answer's body is what this yields, as it yields it (not ``body``)
    stream: Callable[[], AsyncIterator[bytes]] | None = None


class PostmarkPeer:
    """``async with PostmarkPeer(token="…") as pm:`` — then point ``base_url`` at ``pm.url``."""

    def __init__(self, token: str = "server-token") -> None:
        self.token = token
        self.requests: list[dict[str, Any]] = []  #: bodies of accepted requests
        self.headers: list[dict[str, str]] = []  #: their headers
        self.inactive: set[str] = set()  #: addresses Postmark has suppressed
        self.script: deque[Scripted] = deque()  #: answered one per request, before any check
        self.port = 0
        self._server: LocalServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> PostmarkPeer:
        app = Starlette(
            routes=[
                Route("/email", self._email, methods=["POST"]),
                Route("/server", self._server_info, methods=["GET"]),
            ]
        )
        self._server = LocalServer(app)
        self.port = await self._server.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        await self._server.stop()

    async def _server_info(self, request: Request) -> JSONResponse:
        """``GET /server``: the server's details for the right token (the account test's
        auth check), 401 with ErrorCode 10 otherwise."""
        if request.headers.get("x-postmark-server-token") != self.token:
            body = {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
            return JSONResponse(body, status_code=401)
        return JSONResponse({"ID": 1, "Name": "test server"})

    async def _email(self, request: Request) -> Response:
        if self.script:
            s = self.script.popleft()
            if s.stream is not None:
                return StreamingResponse(s.stream(), status_code=s.status, headers=s.headers)
            return JSONResponse(s.body, status_code=s.status, headers=s.headers)
        if request.headers.get("x-postmark-server-token") != self.token:
            return _error(401, 10, "Request does not contain a valid Server token.")
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(422, 409, "JSON required.")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(422, 402, "Invalid JSON.")
        return self._send(body, dict(request.headers))

    def _send(self, body: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
        if not body.get("From") or not body.get("To"):
            return _error(422, 300, "Invalid email request. Provide From and To.")
        everyone = _addresses(body, "To", "Cc", "Bcc")
        inactive = [a for a in everyone if a.lower() in self.inactive]
        if inactive and len(inactive) == len(everyone):
            return _error(
                422,
                406,
                "You tried to send to recipient(s) that have been marked as inactive. Found"
                f" inactive addresses: {', '.join(inactive)}. Inactive recipients are ones"
                " that have generated a hard bounce, a spam complaint, or a manual suppression.",
            )
        self.requests.append(body)
        self.headers.append(headers)
        message = "OK"
        if inactive:
            message = (
                "Message OK, but will not deliver to these inactive addresses:"
                f" {', '.join(inactive)}."
            )
        return JSONResponse(
            {
                "To": body["To"],
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": message,
            }
        )


def _addresses(body: dict[str, Any], *names: str) -> list[str]:
    values = [str(body[n]) for n in names if body.get(n)]
    return [address for _, address in getaddresses(values)]


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"ErrorCode": code, "Message": message}, status_code=status)
