"""The SMTP capture server, run on the gateway's own event loop (the protocol itself is
:mod:`mailgate.ingest.smtp_protocol`).

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
handler's own (too many recipients, storage trouble) in the handler, the protocol's (size,
malformed address, long line) in the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

from mailgate.inbox import CaptureMeta, Inbox, capture_event
from mailgate.ingest.chaos import Chaos
from mailgate.ingest.handlers import EVENT_ON_LOOP, HandlerFailed, HandlerPool, Verdict
from mailgate.ingest.smtp_auth import AuthResult, CramMd5, LoginPassword
from mailgate.ingest.smtp_data import Spool, line_endings
from mailgate.ingest.smtp_protocol import SmtpConfig, SmtpConnection, SmtpRecorder, Throttle
from mailgate.ingest.smtp_session import Envelope, Networks, Refusal, Session, peer_text
from mailgate.store import CapturedRecord

__all__ = [
    "CaptureHandler",
    "CramMd5",
    "EnvelopeHooks",
    "Networks",
    "Refusal",
    "SmtpRecorder",
    "SmtpServer",
]

log = logging.getLogger(__name__)


class SessionHandler(Protocol):
    """What the server needs of its handler (capture or submission); the ``handle_*``
    hooks and ``verify`` are optional (:class:`~mailgate.ingest.smtp_protocol.SmtpConfig`)."""

    def authenticate(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        data: Any,
    ) -> AuthResult: ...


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


class EnvelopeHooks:
    """What capture and submission sessions answer alike: EHLO also offers PIPELINING
    (commands are read from a buffer and answered in order), and RCPT stops at
    ``max_recipients``."""

    max_recipients: int
    #: the verbs whose hooks may wait on I/O (the store, a thread): they run in a task
    #: from their first step, where the others' first step runs at once (libraries'
    #: time-outs, asyncpg's among them, need a current task)
    io_verbs: frozenset[str] = frozenset()

    async def handle_EHLO(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # commands are read from a buffer and answered in order: pipelining just works
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            server.recorder.smtp_refused(Refusal.TOO_MANY_RECIPIENTS)
            return "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


class CaptureHandler(EnvelopeHooks):
    """The capture server's hooks: one SMTP verb, one small method."""

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

    async def handle_DATA(
        self, server: SmtpConnection, session: Session, envelope: Envelope
    ) -> str:
        spooled = envelope.spooled
        raw = envelope.original_content or b""
        if spooled is not None:  # counted as it was written to its file
            endings = _bare_endings(spooled.crlf, spooled.lf, spooled.cr)
        elif envelope.line_endings is not None:  # a big one, counted as it came
            endings = _bare_endings(*envelope.line_endings)
        else:
            endings = bare_line_endings(raw)
        meta = CaptureMeta(
            mail_from=envelope.mail_from or "",
            rcpt_to=tuple(envelope.rcpt_tos),
            source="smtp",
            remote_addr=peer_text(session.peer),
            helo=session.host_name,
            auth=session.auth_data,
            problems=(*_violations(server), *endings),
        )
        try:
            if spooled is None:
                record, parsed = await self.inbox.capture_parsed(raw, meta)
                paths = await self.inbox.attachment_paths(record, parsed.attachments)
            else:  # its attachments already in their files
                record, parsed, paths = await self.inbox.capture_spooled(
                    spooled.path, spooled.size, meta
                )
        except Exception:  # storage trouble must not lose mail silently: ask for a retry
            log.exception("could not store a captured message from %s", meta.remote_addr)
            server.recorder.smtp_refused(Refusal.STORE_UNAVAILABLE)
            return "451 4.3.0 Could not store the message, try again later"
        contents = None if paths is not None else [a.content for a in parsed.attachments]
        del parsed  # with files, the decoded attachments are not held while handlers run
        if self.handlers is not None:
            if self.include_raw and spooled is not None:
                raw = await asyncio.to_thread(spooled.path.read_bytes)  # asked for whole
            try:
                event = await _event(
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
            if verdict is Verdict.CLOSE:
                server.close_after_reply = True
        server.recorder.smtp_accepted(record.size)
        return f"250 2.0.0 OK: queued as {record.id}"

    async def _discard(self, capture_id: str, tenant: str) -> None:
        with contextlib.suppress(Exception):
            await self.inbox.delete(capture_id, tenant)

    def authenticate(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        data: Any,
    ) -> AuthResult:
        """Accept any credentials (or, with ``users``, only theirs) and keep them on the
        session for the capture event: PLAIN's authorization identity when it has one;
        CRAM-MD5's without a password, which it never sends, but with its challenge and
        response. A refusal is ``535 5.7.8``."""
        auth: dict[str, str | None]
        if isinstance(data, LoginPassword):
            username, password = _text(data.login) or "", _text(data.password) or ""
            known = self.users is None or (
                data.as_itself and _known(self.users, username, password)
            )
            auth = {"mechanism": mechanism, "username": username, "password": password}
            if data.authzid:  # RFC 4616: whom the client asked to act as
                auth["authzid"] = _text(data.authzid)
        elif isinstance(data, CramMd5):
            username = _text(data.username) or ""
            known = self.users is None or _known_digest(self.users, username, data)
            auth = {"mechanism": mechanism, "username": username, "password": None,
                    "challenge": _text(data.challenge), "response": _text(data.digest)}  # fmt: skip
        else:
            return AuthResult(success=self.users is None)
        if not known:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth)


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
    return _bare_endings(*line_endings(raw))


def _bare_endings(crlf: int, lf_octets: int, cr_octets: int) -> tuple[str, ...]:
    """:func:`bare_line_endings` from the counts: CRLF pairs, LF octets, CR octets."""
    problems = []
    if lf := lf_octets - crlf:
        problems.append(
            f"DATA has {lf} bare LF line ending(s): SMTP lines end in CRLF; a relay that"
            " accepts them can be made to split one message in two"
        )
    if cr := cr_octets - crlf:
        problems.append(f"DATA has {cr} bare CR(s) outside CRLF line endings")
    return tuple(problems)


def _violations(server: SmtpConnection) -> tuple[str, ...]:
    """The session's refused commands so far, told on the message it captures now; the
    next message starts a new list."""
    if not server.violations:
        return ()
    refused, server.violations = server.violations, []
    return (f"the session had {len(refused)} command(s) refused before this message: "
            + "; ".join(refused),)  # fmt: skip


async def _event(
    record: CapturedRecord,
    *,
    raw: bytes | None,
    contents: list[bytes] | None,
    paths: list[str] | None,
) -> dict[str, Any]:
    """The capture event for the handlers; a big message's in a worker thread (its
    attachments' base64 and the raw source's text held the event loop for tens of
    milliseconds per 10 MiB), a small one's on the loop, cheaper than the hand-off."""
    if record.size > EVENT_ON_LOOP:
        return await asyncio.to_thread(
            capture_event, record, raw=raw, contents=contents, paths=paths
        )
    return capture_event(record, raw=raw, contents=contents, paths=paths)


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


_FAREWELL = 2.0  #: seconds a session's connection gets to close after its 421


async def _ended(sessions: list[asyncio.Task[None]]) -> None:
    """Wait for the commands of sessions told to go: a connection lost cancels its
    command; one whose connection does not close (its client reads no more) is cancelled
    here."""
    if not sessions:
        return
    _, lingering = await asyncio.wait(sessions, timeout=_FAREWELL)
    for session in lingering:
        session.cancel()
    if lingering:
        await asyncio.wait(lingering)


class SmtpServer:
    """Listens on a socket and runs SMTP sessions on the current event loop."""

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
        throttle: Throttle | None = None,
        cleartext_auth_from: Networks = (),
        chaos: Chaos | None = None,
        spool: Spool | None = None,
    ) -> None:
        """``tls_context``: STARTTLS is offered with it, and :meth:`start_tls` can open an
        implicit-TLS listener. ``submission``: AUTH before MAIL, and only over TLS unless
        the client is in ``cleartext_auth_from``; ``throttle`` turns away addresses
        failing AUTH. ``chaos``: the triggers that refuse commands on purpose (read at
        each command, so a change applies to open sessions too); None: never. ``spool``:
        where a DATA block past its threshold is written as it arrives (capture in
        tempfile mode; the handler gets the file)."""
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
        self.sessions: set[SmtpConnection] = set()
        self._config = SmtpConfig(
            handler,
            hostname=hostname,
            max_message_size=max_message_size,
            read_timeout=timeout,
            write_timeout=write_timeout,
            recorder=self.recorder,
            sessions=self.sessions,
            max_connections=max_connections,
            tls_context=tls_context,
            auth_required=submission,
            cleartext_auth_from=cleartext_auth_from if submission else None,
            throttle=throttle,
            # CRAM-MD5 needs the password itself; submission keeps only its hash
            mechanisms=("LOGIN", "PLAIN") if submission else ("CRAM-MD5", "LOGIN", "PLAIN"),
            chaos=chaos or Chaos(),
            spool=spool,
        )
        # on the implicit-TLS listener the connection is TLS already: no STARTTLS
        self._tls_config = dataclasses.replace(
            self._config, tls_context=None, implicit_tls=self.tls_context
        )
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None

    def _session(self, *, implicit_tls: bool = False) -> SmtpConnection:
        return SmtpConnection(self._tls_config if implicit_tls else self._config)

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
            # a plain listener whose sessions start TLS themselves, so that a
            # connection holds its slot (max_connections) during its handshake
            self._tls_server = await loop.create_server(
                lambda: self._session(implicit_tls=True), host, port, backlog=1024
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
        # sessions signal nothing when a transaction ends, so poll briefly.
        while any(s.in_transaction for s in self.sessions) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.say_goodbye()
        # and the commands that began during the grace (a DATA sent after shutdown began)
        running += [t for s in self.sessions if (t := s.task) is not None and t not in running]
        await _ended(running)
        await self._server.wait_closed()
        self._server = None
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
            self._tls_server = None
