"""A request-body limit enforced while the body streams in, before anything parses it.

Without it a 200 MB POST is read and parsed whole before the API refuses it.
:class:`BodyLimit` answers ``413 Content Too Large`` (RFC 9110 §15.5.14) at once
when ``Content-Length`` already says too much, and otherwise counts the bytes as
the application reads them and stops at the first chunk past the limit. The
connection is then closed (``Connection: close``, RFC 9112 §9.6): the rest of
the body is never read, so it is never held in memory either.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailgate.settings import LimitSettings

__all__ = ["BodyLimit", "BodyTooLarge", "effective_body_limit"]


def effective_body_limit(limits: LimitSettings) -> int:
    """The smaller of ``max_request_body`` and the largest batch the API would take."""
    return min(limits.max_request_body, limits.max_batch * limits.max_message_size)


class BodyTooLarge(Exception):
    """Raised from ``receive`` once the body has passed the limit.

    Whatever the application makes of it (FastAPI turns unexpected errors while
    reading a body into a 400), :class:`BodyLimit` answers the 413 in its place.
    """


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self.refuse(send)
            return
        await _LimitedExchange(self, receive, send).run(scope)

    async def refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"request body is over the limit of {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _LimitedExchange:
    """One request: counts what the application receives, swaps its reply for a 413."""

    def __init__(self, owner: BodyLimit, receive: Receive, send: Send) -> None:
        self.owner = owner
        self._receive = receive
        self._send = send
        self.received = 0
        self.over = False
        self.started = False

    async def run(self, scope: Scope) -> None:
        try:
            await self.owner.app(scope, self.receive, self.send)
        except BodyTooLarge:
            if self.started:
                raise
        if self.over and not self.started:
            await self.owner.refuse(self._send)
            self.started = True

    async def receive(self) -> Message:
        if self.over:
            raise BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.owner.limit:
                self.over = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.over:
            return  # the application's reply to a body it never got; the 413 goes instead
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses a malformed Content-Length before we see it
    return None
