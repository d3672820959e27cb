"""A request-body limit enforced while the body streams in, before anything parses it.

Without it a 200 MB POST is read and parsed whole before the API refuses it.
:class:`BodyLimit` answers ``413 Content Too Large`` (RFC 9110 §15.5.14) at once
when ``Content-Length`` already says too much, and otherwise counts the bytes as
the application reads them and stops at the first chunk past the limit.

The connection is then closed (``Connection: close``, RFC 9112 §9.6). Closing
while the client is still sending makes the kernel answer with a reset, which
can destroy the 413 before a client that writes its whole body before reading
(httpx, requests) sees it. So, like nginx's lingering close, the rest of the
body is read and thrown away — never kept — for at most :data:`DRAIN_BYTES`
and :data:`DRAIN_SECONDS`; a larger body is cut off there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailgate.settings import LimitSettings

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "BodyLimit", "BodyTooLarge", "effective_body_limit"]

#: After a 413, at most this much of the rest of the body is read and discarded.
DRAIN_BYTES = 4 * 1024 * 1024
#: …and for at most this long.
DRAIN_SECONDS = 2.0


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
            await self.refuse(send, receive)
            return
        await _LimitedExchange(self, receive, send).run(scope)

    async def refuse(self, send: Send, receive: Receive | None) -> None:
        """Send the 413; drain what is left of the body (``receive``) before it ends."""
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
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if receive is not None:
            await _drain(receive)
        await send({"type": "http.response.body", "body": b""})


async def _drain(receive: Receive) -> None:
    """Read and discard the body's rest, within :data:`DRAIN_BYTES` and :data:`DRAIN_SECONDS`."""
    budget = DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                budget -= len(message.get("body", b""))


class _LimitedExchange:
    """One request: counts what the application receives, swaps its reply for a 413."""

    def __init__(self, owner: BodyLimit, receive: Receive, send: Send) -> None:
        self.owner = owner
        self._receive = receive
        self._send = send
        self.received = 0
        self.over = False
        self.started = False
        self.body_done = False

    async def run(self, scope: Scope) -> None:
        try:
            await self.owner.app(scope, self.receive, self.send)
        except BodyTooLarge:
            if self.started:
                raise
        if self.over and not self.started:
            await self.owner.refuse(self._send, None if self.body_done else self._receive)
            self.started = True

    async def receive(self) -> Message:
        if self.over:
            raise BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.body_done = not message.get("more_body", False)
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
