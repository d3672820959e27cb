"""Real peers for tests: a scriptable upstream MTA (aiosmtpd) in the test's event loop.

An :class:`Upstream` answers like a real server would: 250 by default, or any
reply a test scripts at MAIL, RCPT (per recipient) or DATA (per transaction,
in order), or it drops the connection at a given verb.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections import deque
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["Received", "Upstream"]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> EmailMessage:
        msg = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(msg, EmailMessage)
        return msg


class _Session(SMTP):
    """aiosmtpd's session, with the replies to EHLO and to the DATA command itself
    scriptable."""

    async def smtp_EHLO(self, hostname: str) -> None:
        upstream = self.event_handler
        assert isinstance(upstream, Upstream)
        if upstream.ehlo_reply is None:
            await super().smtp_EHLO(hostname)
            return
        await self.push(upstream.ehlo_reply)

    async def smtp_DATA(self, arg: str) -> None:
        upstream = self.event_handler
        assert isinstance(upstream, Upstream)
        if upstream.data_command_reply is None or not self.envelope or not self.envelope.rcpt_tos:
            await super().smtp_DATA(arg)
            return
        await self.push(upstream.data_command_reply)


class Upstream:
    """``async with Upstream() as up:`` — then relay to ``up.url``."""

    def __init__(
        self,
        *,
        tls: str | None = None,
        credentials: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        smtputf8: bool = True,
    ) -> None:
        """``tls``: None, "starttls" (required before AUTH/MAIL) or "implicit" (SMTPS).
        ``credentials``: username → password; when given, AUTH is required."""
        assert tls is None or ssl_context is not None
        self.tls = tls
        self.smtputf8 = smtputf8
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.logins: list[str] = []
        self.received: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}  #: address → reply (e.g. "550 5.1.1 no such user")
        self.data_replies: deque[str] = deque()  #: consumed one per DATA; then 250
        self.drop_at: str | None = None  #: "MAIL", "RCPT" or "DATA": close the connection there
        self.mail_reply: str | None = None  #: the reply to every MAIL instead of 250
        self.data_command_reply: str | None = None  #: the reply to DATA itself instead of 354
        self.ehlo_reply: str | None = None  #: the reply to EHLO instead of its extensions
        self.connections = 0
        self.transactions = 0
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = {None: "smtp", "starttls": "smtp+starttls", "implicit": "smtps"}[self.tls]
        return f"{scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Upstream:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            self.connections += 1
            with warnings.catch_warnings():  # AUTH without STARTTLS is fine under implicit TLS
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                return self._session(loop)

        implicit = self.ssl_context if self.tls == "implicit" else None
        self._server = await loop.create_server(factory, "127.0.0.1", 0, ssl=implicit)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _session(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        return _Session(
            self,
            hostname="upstream.test",
            enable_SMTPUTF8=self.smtputf8,
            loop=loop,
            tls_context=self.ssl_context if self.tls == "starttls" else None,
            require_starttls=self.tls == "starttls",
            auth_required=self.credentials is not None,
            # aiosmtpd knows STARTTLS but not implicit TLS: there the line is TLS anyway
            auth_require_tls=self.tls == "starttls",
            authenticator=self._authenticate,
        )

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)  # aiosmtpd then answers 535
        login, password = data.login.decode(), data.password.decode()
        ok = self.credentials.get(login) == password
        if ok:
            self.logins.append(login)
        return AuthResult(success=ok, handled=False)

    def _drop(self, server: SMTP, verb: str) -> bool:
        if self.drop_at == verb:
            assert server.transport is not None
            server.transport.close()
            return True
        return False

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._drop(server, "MAIL"):
            return "421 4.4.2 dropped"
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._drop(server, "RCPT"):
            return "421 4.4.2 dropped"
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.transactions += 1
        if self._drop(server, "DATA"):
            return "421 4.4.2 dropped"
        reply = self.data_replies.popleft() if self.data_replies else "250 2.0.0 OK: queued"
        if reply.startswith("2"):
            raw = envelope.original_content or b""
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    raw,
                    list(envelope.mail_options),
                )
            )
            self.arrived.set()
        return reply

    async def wait_for(self, count: int, limit: float = 10.0) -> list[Received]:
        """Wait until ``count`` messages were accepted in all."""
        async with asyncio.timeout(limit):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received
