"""The SMTP capture server (aiosmtpd), run on the gateway's own event loop.

Every accepted message is parsed and committed to the inbox *before* the
``250`` after DATA (accept means durable). Any AUTH PLAIN/LOGIN credentials
are accepted and recorded: in development the point is to see what the
application sent, including how it authenticates.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailgate.inbox import CaptureMeta, Inbox

__all__ = ["CaptureHandler", "SmtpServer"]

log = logging.getLogger(__name__)


class CaptureHandler:
    """aiosmtpd hooks: one SMTP verb, one small method."""

    def __init__(self, inbox: Inbox, *, max_recipients: int) -> None:
        self.inbox = inbox
        self.max_recipients = max_recipients
        self._auth: weakref.WeakKeyDictionary[Session, dict[str, Any]] = weakref.WeakKeyDictionary()

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd reads commands from a buffer, so pipelined commands just work.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        meta = CaptureMeta(
            mail_from=envelope.mail_from or "",
            rcpt_to=tuple(envelope.rcpt_tos),
            source="smtp",
            remote_addr=_peer(session.peer),
            helo=session.host_name,
            auth=self._auth.get(session),
        )
        try:
            record = await self.inbox.capture(raw, meta)
        except Exception:  # storage trouble must not lose mail silently: ask for a retry
            log.exception("could not store a captured message from %s", meta.remote_addr)
            return "451 4.3.0 Could not store the message, try again later"
        return f"250 2.0.0 OK: queued as {record.id}"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept any credentials and remember them for the capture event."""
        if isinstance(data, LoginPassword):
            self._auth[session] = {
                "mechanism": mechanism,
                "username": _text(data.login),
                "password": _text(data.password),
            }
        return AuthResult(success=True)


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _peer(peer: Any) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None if peer is None else str(peer)


class _Session(SMTP):
    """An aiosmtpd session that registers itself so shutdown can find it."""

    def __init__(self, registry: set[_Session], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._registry.discard(self)
        super().connection_lost(error)

    @property
    def in_transaction(self) -> bool:
        return self.envelope is not None and self.envelope.mail_from is not None

    def say_goodbye(self, reply: bytes = b"421 4.3.2 Service shutting down") -> None:
        """RFC 5321 §3.8: a server shutting down answers 421 and closes."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(reply + b"\r\n")
            transport.close()

    def _timeout_cb(self) -> None:
        """An idle client is told why before the close (RFC 5321 §4.5.3.2, §3.8: 421).

        aiosmtpd's own callback closes the transport without a reply.
        """
        log.info("%r connection timeout", self.session.peer if self.session else None)
        host = self.hostname.encode("ascii", "replace")
        self.say_goodbye(b"421 4.4.2 " + host + b" Error: timeout exceeded")


class SmtpServer:
    """Listens on a socket and runs aiosmtpd sessions on the current event loop."""

    def __init__(
        self, handler: CaptureHandler, *, hostname: str, max_message_size: int, timeout: float
    ) -> None:
        self.handler = handler
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.timeout = timeout
        self.sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None

    def _session(self) -> _Session:
        return _Session(
            self.sessions,
            self.handler,
            hostname=self.hostname,
            ident="mailgate ESMTP",
            data_size_limit=self.max_message_size,
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=self.handler.authenticate,
            timeout=self.timeout,
            loop=asyncio.get_running_loop(),
        )

    @property
    def listening(self) -> bool:
        """Whether it accepts connections now (for ``/readyz``)."""
        return self._server is not None and self._server.is_serving()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        try:
            # asyncio's default backlog (100) makes bursts of new clients wait for SYN
            # retransmits; mail clients connect in bursts.
            self._server = await loop.create_server(self._session, host, port, backlog=1024)
        except OSError as exc:
            message = f"SMTP server cannot listen on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, message) from exc
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting; give open transactions ``grace`` seconds, then 421 everyone."""
        if self._server is None:
            return
        self._server.close()
        for session in [s for s in self.sessions if not s.in_transaction]:
            session.say_goodbye()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # aiosmtpd sessions signal nothing when a transaction ends, so poll briefly.
        while any(s.in_transaction for s in self.sessions) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.say_goodbye()
        await self._server.wait_closed()
        self._server = None
