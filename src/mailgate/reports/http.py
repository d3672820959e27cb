"""A lean HTTP/1.1 client for webhook POSTs: h11 over asyncio streams, kept-alive
connections per endpoint, each made to the address the SSRF guard checked.

Why not httpx here: its connection pool checks every pooled connection on every request
(a ``getpeername`` and a ``poll`` each) and routes through anyio; measured, that was
over half of the CPU mailgate spent per webhook, which capped a 2-core machine near 360
POSTs a second. The protocol work itself is h11's (the state machine under httpx), so
this module only connects, writes the request, and reads the status and at most a few
KiB of the answer.

A connection is reused only when both sides finished the exchange cleanly and nothing
came after the answer; one that the
receiver closed while idle is noticed (end of stream before any answer) and the POST is
sent once more on a new connection, as browsers and httpx do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11

from mailgate.deliver.ssrf import NetGuard

if TYPE_CHECKING:
    import httpx

__all__ = ["Answer", "Endpoint", "ProtocolFailure"]

_PORTS = {"http": 80, "https": 443}
_KEEP = 64 * 1024  #: answer bytes kept for the attempt record (the rest is read, dropped)


class ProtocolFailure(Exception):
    """The receiver broke HTTP/1.1 or closed the connection without an answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    body: bytes  #: at most 64 KiB of it


class Endpoint:
    """One webhook URL: a few kept-alive connections to it; ``aclose()`` at the end."""

    def __init__(self, url: httpx.URL, guard: NetGuard, tls: ssl.SSLContext, *, keep: int) -> None:
        self.url = url
        self.guard = guard
        self.tls = tls
        self.keep = keep
        self.target = url.raw_path or b"/"
        self.host_header = url.netloc
        self._idle: list[_Connection] = []

    async def post(self, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """POST ``body``; the caller bounds the time (``asyncio.timeout``)."""
        fields = [("Host", self.host_header.decode("ascii")), *headers,
                  ("Content-Length", str(len(body)))]  # fmt: skip
        while self._idle:
            conn = self._idle.pop()
            try:
                answer = await conn.exchange(self.target, fields, body)
            except (ProtocolFailure, OSError) as exc:
                conn.close()
                if isinstance(exc, OSError) or (exc.args and exc.args[0] == _NO_ANSWER):
                    continue  # closed or reset by the receiver while idle: a fresh one
                raise
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return answer
        conn = await self._connect()
        try:
            answer = await conn.exchange(self.target, fields, body)
        except BaseException:
            conn.close()
            raise
        self._release(conn)
        return answer

    def _release(self, conn: _Connection) -> None:
        if conn.reusable() and len(self._idle) < self.keep:
            self._idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Connection:
        host = self.url.host
        port = self.url.port or _PORTS[self.url.scheme]
        address = await self.guard.resolve(host, port)  # AddressRefused, UnresolvableHost
        secure = self.url.scheme == "https"
        reader, writer = await asyncio.open_connection(
            address,
            port,
            ssl=self.tls if secure else None,
            server_hostname=host if secure else None,
        )
        return _Connection(reader, writer)

    def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


_NO_ANSWER = "the connection closed before an answer"


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    async def exchange(self, target: bytes, headers: list[tuple[str, str]], body: bytes) -> Answer:
        c = self.h11
        try:
            data = c.send(h11.Request(method="POST", target=target, headers=headers))
            data = (data or b"") + (c.send(h11.Data(data=body)) or b"")
            data += c.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise ProtocolFailure(f"cannot send: {exc}") from exc
        self.writer.write(data)
        await self.writer.drain()
        status, reason, kept, answered = 0, "", bytearray(), False
        while True:
            try:
                event = c.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolFailure(f"invalid HTTP answer: {exc}") from exc
            if event is h11.NEED_DATA:
                chunk = await self.reader.read(65536)
                if not chunk and not answered:
                    raise ProtocolFailure(_NO_ANSWER)
                c.receive_data(chunk)
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                status, reason, answered = event.status_code, event.reason.decode("latin-1"), True
            elif isinstance(event, h11.Data):
                if len(kept) < _KEEP:
                    kept += event.data[: _KEEP - len(kept)]
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, reason, bytes(kept))
            elif isinstance(event, h11.ConnectionClosed):
                raise ProtocolFailure(_NO_ANSWER)

    def reusable(self) -> bool:
        """Both sides done, and nothing received past the answer: bytes left over (an
        answer sent twice) would be read as the next request's answer."""
        c = self.h11
        if c.trailing_data[0]:
            return False
        if c.our_state is h11.DONE and c.their_state is h11.DONE:
            with contextlib.suppress(h11.LocalProtocolError):
                c.start_next_cycle()
                return True
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
