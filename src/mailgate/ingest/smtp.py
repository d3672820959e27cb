"""The SMTP capture server (aiosmtpd), run on the gateway's own event loop.

Every accepted message is parsed and committed to the inbox *before* the
``250`` after DATA (accept means durable). Any AUTH PLAIN/LOGIN credentials
are accepted and recorded: in development the point is to see what the
application sent, including how it authenticates. Capture also offers CRAM-MD5
(RFC 2195), where the password never crosses the wire: the challenge and the
client's digest are recorded instead, and checked with ``smtp.auth = verify``.
Submission does not offer it: it keeps only password hashes, and CRAM-MD5 needs
the password itself.

With a recorder (:class:`SmtpRecorder`, which :class:`mailgate.metrics.Metrics` is) the
server counts connections, accepted messages and their bytes, refusals by
:class:`Refusal`, and AUTH attempts. A refusal is counted where it is decided: the
handler's own (too many recipients, storage trouble) in the handler, aiosmtpd's (size,
malformed address, long line) by their reply, as the session sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import secrets
import ssl
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    auth_mechanism,
)

from mailgate.inbox import CaptureMeta, Inbox, capture_event
from mailgate.ingest.handlers import HandlerFailed, HandlerPool, Verdict

__all__ = [
    "AuthThrottle",
    "CaptureHandler",
    "CramMd5",
    "Networks",
    "Refusal",
    "SmtpRecorder",
    "SmtpServer",
]

log = logging.getLogger(__name__)


class Refusal(StrEnum):
    """Why the server refused a message, or one of its recipients (a metrics label)."""

    TOO_BIG = "too_big"  #: over the size limit, announced with SIZE or sent (RFC 1870: 552)
    TOO_MANY_RECIPIENTS = "too_many_recipients"  #: RCPT past the limit (RFC 5321 §4.5.3.1.10)
    BAD_ADDRESS = "bad_address"  #: a malformed MAIL FROM or RCPT TO address (553)
    LINE_TOO_LONG = "line_too_long"  #: a DATA line past the limit (RFC 5321 §4.5.3.1.6)
    STORE_UNAVAILABLE = "store_unavailable"  #: the capture could not be committed (451)
    TOO_MANY_CONNECTIONS = "too_many_connections"  #: over smtp.max_connections (421)
    AUTH_THROTTLED = "auth_throttled"  #: too many failed AUTH from the address (421)


class SmtpRecorder(Protocol):
    """Where the server reports what it did (:class:`mailgate.metrics.Metrics`)."""

    def smtp_connected(self) -> None: ...
    def smtp_disconnected(self) -> None: ...
    def smtp_accepted(self, size: int) -> None: ...
    def smtp_refused(self, reason: str) -> None: ...
    def smtp_auth(self, mechanism: str, *, success: bool) -> None: ...


class SessionHandler(Protocol):
    """What the server needs of its aiosmtpd handler (capture or submission)."""

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult: ...


@dataclass(frozen=True)
class CramMd5:
    """A CRAM-MD5 answer (RFC 2195 §2): the challenge the server sent, and the client's
    username and digest, the hex HMAC-MD5 of the challenge keyed with its password."""

    username: bytes
    challenge: bytes
    digest: bytes

    def made_with(self, password: str) -> bool:
        """Whether the digest is the one ``password`` makes (compared in constant time)."""
        expected = hmac.new(password.encode(), self.challenge, "md5").hexdigest()
        return hmac.compare_digest(expected.encode(), self.digest.lower())


class _Unrecorded:
    """The recorder of a server given none."""

    def smtp_connected(self) -> None:
        pass

    def smtp_disconnected(self) -> None:
        pass

    def smtp_accepted(self, size: int) -> None:
        pass

    def smtp_refused(self, reason: str) -> None:
        pass

    def smtp_auth(self, mechanism: str, *, success: bool) -> None:
        pass


class CaptureHandler:
    """aiosmtpd hooks: one SMTP verb, one small method."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        max_recipients: int,
        users: Mapping[str, str] | None = None,
        handlers: HandlerPool | None = None,
        include_raw: bool = False,
    ) -> None:
        """``users``: username → password, the only credentials taken (``smtp.auth =
        verify``); None takes any. ``handlers``: what each captured message is handed to,
        as its capture event with each attachment's content (base64) or, when the inbox
        keeps attachment files (tempfile mode), its file's path, and, with
        ``include_raw``, the whole message as it arrived."""
        self.inbox = inbox
        self.max_recipients = max_recipients
        self.users = users
        self.handlers = handlers
        self.include_raw = include_raw
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
            _recorder(server).smtp_refused(Refusal.TOO_MANY_RECIPIENTS)
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
            problems=(*_violations(server), *bare_line_endings(raw)),
        )
        try:
            record, parsed = await self.inbox.capture_parsed(raw, meta)
            paths = await self.inbox.attachment_paths(record, parsed.attachments)
        except Exception:  # storage trouble must not lose mail silently: ask for a retry
            log.exception("could not store a captured message from %s", meta.remote_addr)
            _recorder(server).smtp_refused(Refusal.STORE_UNAVAILABLE)
            return "451 4.3.0 Could not store the message, try again later"
        contents = None if paths is not None else [a.content for a in parsed.attachments]
        del parsed  # with files, the decoded attachments are not held while handlers run
        if self.handlers is not None:
            try:
                event = capture_event(
                    record, raw=raw if self.include_raw else None, contents=contents, paths=paths
                )
                verdict = await self.handlers.run(event)
            except HandlerFailed as exc:
                # not accepted, so not kept: the client's retry must not be a duplicate
                await self._discard(record.id, record.tenant)
                return f"451 4.3.0 {exc}, try again later"
            except asyncio.CancelledError:  # the session lost: shutdown past its grace (421)
                await self._discard(record.id, record.tenant)
                raise
            if verdict is Verdict.CLOSE and isinstance(server, _Session):
                server.close_after_reply = True
        _recorder(server).smtp_accepted(len(raw))
        return f"250 2.0.0 OK: queued as {record.id}"

    async def _discard(self, capture_id: str, tenant: str) -> None:
        with contextlib.suppress(Exception):
            await self.inbox.delete(capture_id, tenant)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Accept any credentials (or, with ``users``, only theirs) and remember them for
        the capture event: CRAM-MD5's without a password, which it never sends, but with
        its challenge and response. A refusal is aiosmtpd's ``535 5.7.8``."""
        auth: dict[str, str | None]
        if isinstance(data, LoginPassword):
            username, password = _text(data.login) or "", _text(data.password) or ""
            known = self.users is None or _known(self.users, username, password)
            auth = {"mechanism": mechanism, "username": username, "password": password}
        elif isinstance(data, CramMd5):
            username = _text(data.username) or ""
            known = self.users is None or _known_digest(self.users, username, data)
            auth = {"mechanism": mechanism, "username": username, "password": None,
                    "challenge": _text(data.challenge), "response": _text(data.digest)}  # fmt: skip
        else:
            return AuthResult(success=self.users is None)
        if not known:
            return AuthResult(success=False, handled=False)
        self._auth[session] = auth
        return AuthResult(success=True)


def _known(users: Mapping[str, str], username: str, password: str) -> bool:
    expected = users.get(username)
    # compared in constant time, and as long for an unknown user as for a known one
    against = expected if expected is not None else "\0" + password
    return hmac.compare_digest(password.encode(), against.encode()) and expected is not None


def _known_digest(users: Mapping[str, str], username: str, answer: CramMd5) -> bool:
    expected = users.get(username)
    # an unknown user's digest is checked too, so it takes as long as a known one's
    return answer.made_with(expected if expected is not None else "") and expected is not None


def bare_line_endings(raw: bytes) -> tuple[str, ...]:
    """Line endings other than CRLF in DATA (RFC 5321 §2.3.8). Only ``CRLF.CRLF`` ends
    DATA here, so ``LF.LF`` followed by a second MAIL FROM stays inside this message;
    a server that also ended DATA on it would take that as a second message ("SMTP
    smuggling"). Capture keeps the message and says so."""
    crlf = raw.count(b"\r\n")
    problems = []
    if lf := raw.count(b"\n") - crlf:
        problems.append(
            f"DATA has {lf} bare LF line ending(s): SMTP lines end in CRLF; a relay that"
            " accepts them can be made to split one message in two"
        )
    if cr := raw.count(b"\r") - crlf:
        problems.append(f"DATA has {cr} bare CR(s) outside CRLF line endings")
    return tuple(problems)


def _unbalanced_path(arg: str | None, keyword: str) -> bool:
    """A path opened with ``<`` and not closed, or closed and not opened (aiosmtpd takes
    ``<a@example.com`` as an address). A bare address without brackets is let through,
    as most servers do; aiosmtpd answers the other syntax errors itself."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return False
    path = arg[len(keyword) :].lstrip().split(" ", 1)[0]
    return path.startswith("<") != path.endswith(">")


_MAX_VIOLATIONS = 20  #: refused commands remembered per session (a flood must not grow it)


def _violations(server: SMTP) -> tuple[str, ...]:
    """The session's refused commands so far, told on the message it captures now; the
    next message starts a new list."""
    if not isinstance(server, _Session) or not server.violations:
        return ()
    refused, server.violations = server.violations, []
    return (f"the session had {len(refused)} command(s) refused before this message: "
            + "; ".join(refused),)  # fmt: skip


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class AuthThrottle:
    """Failed AUTH attempts per client address (as Postfix's anvil counts them): past
    ``max_failures`` within ``window`` seconds the address is turned away (421) until
    its oldest failure in the window is older than that. Kept per process."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str) -> list[float]:
        since = time.monotonic() - self.window
        recent = [t for t in self._failures.get(client, ()) if t > since]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.max_failures

    def failed(self, client: str) -> None:
        recent = self._recent(client)
        now = time.monotonic()
        if len(self._failures) >= _MAX_THROTTLED:
            since = now - self.window
            self._failures = {k: v for k, v in self._failures.items() if v[-1] > since}
        self._failures[client] = [*recent, now][-self.max_failures :]


_MAX_THROTTLED = 100_000  #: client addresses remembered at most (a flood must not grow it)


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _within(peer: Any, networks: Networks) -> bool:
    """Whether the client's address is in one of ``networks``."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    try:
        address = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _peer(peer: Any) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None if peer is None else str(peer)


def _recorder(server: SMTP) -> SmtpRecorder:
    """The recorder of the server a hook runs in (aiosmtpd hands every hook its server)."""
    return server.recorder if isinstance(server, _Session) else _Unrecorded()


#: aiosmtpd's size refusals: at MAIL (SIZE=) and after DATA; sent with RFC 3463's code
#: for a message too big for the system (5.3.4) instead
_TOO_BIG = "552 Error: "

#: The refusals aiosmtpd (1.4) decides and answers itself, by the start of the reply.
_AIOSMTPD_REFUSALS = (
    ("552 ", Refusal.TOO_BIG),  # at MAIL (SIZE=) or after DATA
    ("553 5.1.3 ", Refusal.BAD_ADDRESS),  # at MAIL or RCPT
    ("500 Line too long", Refusal.LINE_TOO_LONG),  # after DATA
)


class _Session(SMTP):
    """An aiosmtpd session that registers itself so shutdown can find it, and reports
    to the server's recorder."""

    def __init__(
        self,
        registry: set[_Session],
        recorder: SmtpRecorder,
        max_connections: int,
        write_timeout: float,
        *args: Any,
        throttle: AuthThrottle | None = None,
        cleartext_auth_from: Networks | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._registry = registry
        self.recorder = recorder
        self.max_connections = max_connections
        self.write_timeout = write_timeout
        self.throttle = throttle  #: failed AUTH attempts per client address
        #: AUTH only over TLS but from these networks (submission); None: no such rule
        self.cleartext_auth_from = cleartext_auth_from
        self.close_after_reply = False  #: a handler said CLOSE: 221 after the 250
        #: commands refused (5xx) since the session began or its last captured message
        self.violations: list[str] = []
        self.draining = False  #: shutting down: 421 once the current transaction ends
        self._turned_away = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self not in self._registry:  # not again after a STARTTLS handshake
            if len(self._registry) >= self.max_connections:
                self._turn_away(transport)
                return
            self._registry.add(self)
            self.recorder.smtp_connected()
        if self.cleartext_auth_from is not None:
            secure = transport.get_extra_info("sslcontext") is not None
            peer = transport.get_extra_info("peername")
            self._auth_require_tls = not secure and not _within(peer, self.cleartext_auth_from)
        super().connection_made(transport)

    def _turn_away(self, transport: asyncio.BaseTransport) -> None:
        """RFC 5321 §3.1: a server that will not serve says 421 instead of 220."""
        self._turned_away = True
        self.recorder.smtp_refused(Refusal.TOO_MANY_CONNECTIONS)
        if isinstance(transport, asyncio.WriteTransport):
            host = self.hostname.encode("ascii", "replace")
            transport.write(b"421 4.7.0 " + host + b" Too many connections, try again later\r\n")
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return  # never a session: nothing of aiosmtpd's to end
        if self in self._registry:
            self._registry.discard(self)
            self.recorder.smtp_disconnected()
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        reply = status if isinstance(status, str) else status.decode("ascii", "replace")
        for start, reason in _AIOSMTPD_REFUSALS:
            if reply.startswith(start):
                self.recorder.smtp_refused(reason)
        if reply.startswith(_TOO_BIG):  # aiosmtpd's, without the enhanced code
            reply = "552 5.3.4 " + reply.removeprefix(_TOO_BIG).capitalize()
            status = reply  # type: ignore[assignment]
        if reply[:1] == "5" and len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(reply[:200])
            log.info("SMTP %s: %s", _peer(self.session.peer) if self.session else "?", reply)
        try:
            async with asyncio.timeout(self.write_timeout):
                await super().push(status)
        except TimeoutError:
            # a client that does not read its replies would hold them in memory for ever
            peer = _peer(self.session.peer) if self.session else None
            log.info("SMTP %s: replies unread for %g s; dropped", peer, self.write_timeout)
            if isinstance(self.transport, asyncio.WriteTransport):
                self.transport.abort()
            return
        if self.close_after_reply and reply.startswith("250"):
            self.close_after_reply = False
            self.say_goodbye(b"221 2.0.0 Bye")  # a capture handler said CLOSE
        if self.draining and not self.in_transaction:
            self.say_goodbye()  # its transaction has ended (aiosmtpd resets it before the reply)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if _unbalanced_path(arg, "FROM:"):
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if _unbalanced_path(arg, "TO:"):
            await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        await super().smtp_RCPT(arg)

    # aiosmtpd runs a mechanism's auth_* method only for an AUTH it accepted to start
    # (after EHLO, not yet authenticated, a mechanism it offers), so each run is an attempt.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._attempt("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._attempt("LOGIN", await super().auth_LOGIN(_, args))

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, _: Any, args: list[str]) -> AuthResult:
        """RFC 2195: the server sends a one-time challenge in the form of a message id, the
        client answers ``username SP hex-digest``; the handler checks the digest against
        the password it knows. Offered in capture only (see :meth:`SmtpServer._session`)."""
        return await self._attempt("CRAM-MD5", await self._cram_md5(args))

    async def _cram_md5(self, args: list[str]) -> AuthResult:
        if len(args) > 1:  # the server speaks first: there is no initial response
            await self.push("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False)
        challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{self.hostname}>".encode()
        answer = await self.challenge_auth(challenge)
        if answer is MISSING:  # "*" or not base64: aiosmtpd has answered 501
            return AuthResult(success=False)
        username, _, digest = bytes(answer).rpartition(b" ")
        if not username or not digest:
            await self.push("501 5.5.2 Expected: username SP digest")
            return AuthResult(success=False)
        return self._authenticate("CRAM-MD5", CramMd5(username, challenge, digest))

    async def smtp_AUTH(self, arg: str) -> None:
        if self.throttle is not None and self.throttle.blocked(self._client()):
            self.recorder.smtp_refused(Refusal.AUTH_THROTTLED)
            self.say_goodbye(b"421 4.7.0 Too many failed authentication attempts, try later")
            return
        await super().smtp_AUTH(arg)

    async def _attempt(self, mechanism: str, result: AuthResult) -> AuthResult:
        """Check the credentials when the handler does it off the event loop (``verify``:
        submission's password hashes), then count the attempt: anything short of success
        (RFC 4954 §4: 235) is a failure, a response that is not base64 or a ``*`` abort
        included."""
        verify = getattr(self.event_handler, "verify", None)
        if result.success and verify is not None:
            identity = await verify(result.auth_data)
            result = (
                AuthResult(success=False, handled=False)
                if identity is None
                else AuthResult(success=True, auth_data=identity)
            )
        self.recorder.smtp_auth(mechanism, success=bool(result.success))
        if not result.success and self.throttle is not None:
            self.throttle.failed(self._client())
        return result

    def _client(self) -> str:
        peer = self.session.peer if self.session else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task serving the session (aiosmtpd's), None before its greeting."""
        return self._handler_coroutine

    @property
    def in_transaction(self) -> bool:
        return self.envelope is not None and self.envelope.mail_from is not None

    def drain(self) -> None:
        """Shutdown has begun: finish the transaction under way, if any, then hear 421."""
        self.draining = True
        if not self.in_transaction:
            self.say_goodbye()

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


_FAREWELL = 2.0  #: seconds a session's connection gets to close after its 421


async def _ended(sessions: list[asyncio.Task[None]]) -> None:
    """Wait for sessions told to go: aiosmtpd cancels one when its connection is lost;
    one whose connection does not close (its client reads no more) is cancelled here."""
    if not sessions:
        return
    _, lingering = await asyncio.wait(sessions, timeout=_FAREWELL)
    for session in lingering:
        session.cancel()
    if lingering:
        await asyncio.wait(lingering)


class SmtpServer:
    """Listens on a socket and runs aiosmtpd sessions on the current event loop."""

    def __init__(
        self,
        handler: SessionHandler,
        *,
        hostname: str,
        max_message_size: int,
        timeout: float,
        metrics: SmtpRecorder | None = None,
        tls_context: ssl.SSLContext | None = None,
        max_connections: int = 500,
        write_timeout: float = 10.0,
        submission: bool = False,
        throttle: AuthThrottle | None = None,
        cleartext_auth_from: Networks = (),
    ) -> None:
        """``tls_context``: STARTTLS is offered with it, and :meth:`start_tls` can open an
        implicit-TLS listener. ``submission``: AUTH before MAIL, and only over TLS unless
        the client is in ``cleartext_auth_from``; ``throttle`` turns away addresses
        failing AUTH."""
        self.handler = handler
        self.cleartext_auth_from = cleartext_auth_from
        self.submission = submission
        self.throttle = throttle
        self.tls_context = tls_context
        self.max_connections = max_connections
        self.write_timeout = write_timeout
        self.recorder: SmtpRecorder = metrics or _Unrecorded()
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.timeout = timeout
        self.sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None

    def _session(self, *, implicit_tls: bool = False) -> _Session:
        return _Session(
            self.sessions,
            self.recorder,
            self.max_connections,
            self.write_timeout,
            self.handler,
            throttle=self.throttle,
            cleartext_auth_from=self.cleartext_auth_from if self.submission else None,
            auth_required=self.submission,
            hostname=self.hostname,
            ident="mailgate ESMTP",
            data_size_limit=self.max_message_size,
            enable_SMTPUTF8=True,
            auth_require_tls=self.submission,
            authenticator=self.handler.authenticate,
            # CRAM-MD5 needs the password itself; submission keeps only its hash
            auth_exclude_mechanism=["CRAM-MD5"] if self.submission else None,
            timeout=self.timeout,
            loop=asyncio.get_running_loop(),
            # on the implicit-TLS listener the connection is TLS already: no STARTTLS
            tls_context=None if implicit_tls else self.tls_context,
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

    async def start_tls(self, host: str, port: int) -> tuple[str, int]:
        """A second listener that speaks TLS from the first byte (RFC 8314 §3.3)."""
        if self.tls_context is None:
            raise ValueError("an implicit-TLS listener needs a certificate")
        loop = asyncio.get_running_loop()
        try:
            self._tls_server = await loop.create_server(
                lambda: self._session(implicit_tls=True),
                host,
                port,
                ssl=self.tls_context,
                ssl_handshake_timeout=min(self.timeout, 30.0),
                backlog=1024,
            )
        except OSError as exc:
            message = f"SMTP TLS listener cannot listen on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, message) from exc
        address = self._tls_server.sockets[0].getsockname()
        return address[0], address[1]

    async def stop(self, grace: float) -> None:
        """Shut down as RFC 5321 §3.8 has it: stop accepting; idle sessions hear 421 now,
        and a session in a transaction may finish it within ``grace`` seconds, then hears
        421. A message already with its capture handlers is part of its transaction: it
        gets their verdict and its 250 or 451 if they answer within the grace. Past the
        grace every session left hears 421 and is ended: a message still with its handlers
        then was not accepted, and is not kept (the client sends it again later). When
        this returns no session's code runs any more."""
        if self._server is None:
            return
        self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        running = [t for s in self.sessions if (t := s.task) is not None]
        for session in list(self.sessions):
            session.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # aiosmtpd sessions signal nothing when a transaction ends, so poll briefly.
        while any(s.in_transaction for s in self.sessions) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.say_goodbye()
        await _ended(running)
        await self._server.wait_closed()
        self._server = None
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
            self._tls_server = None
