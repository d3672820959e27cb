"""The engine under every SMTP connection (RFC 5321): bytes in, command lines run in order,
replies out, timeouts and flow control — an :class:`asyncio.Protocol` with no verb of its
own. The verbs are :class:`~mailgate.ingest.smtp_protocol.SmtpConnection`'s, which runs one
per command line (:meth:`SmtpEngine._command`); AUTH's are :mod:`.smtp_auth`'s.

* bytes arrive in :meth:`SmtpEngine.data_received` into one buffer; command lines are
  split on LF (a CR before it dropped, as aiosmtpd did) and run in order, so pipelined
  commands (RFC 2920) are answered in order. A command runs *eagerly*: its coroutine is
  stepped in place and only becomes a task if it has to wait (a store commit, a password
  hash, an AUTH answer still to come, a TLS handshake), while later lines wait in the
  buffer. DATA is always a task: the handler's work (parse, commit, capture handlers) is.
  So is a verb whose hooks wait on the store (``io_verbs``: submission's AUTH and MAIL):
  a first step outside any task has no current task, which the time-outs of libraries
  under it need (asyncpg's connect: "Timeout should be used inside a task").
* after DATA the bytes go to a :class:`~mailgate.ingest.smtp_data.DataReader`, after BDAT
  to the transaction's :class:`~mailgate.ingest.chunking.ChunkedBody` (RFC 3030: counted
  off, not searched); at the end of either the message goes to the handler's
  ``handle_DATA`` (``envelope.original_content``, or ``envelope.spooled``: in tempfile
  mode, past the spool's threshold, either writes the message to a file as it arrives).
* one idle timer per connection, re-armed only when it fires before its deadline; a
  write timeout only while the transport's buffer is over its high-water mark
  (:meth:`SmtpEngine.pause_writing`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import types
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from mailgate import heap
from mailgate.ingest.chaos import Stage
from mailgate.ingest.smtp_session import Envelope, Refusal, Session, peer_text, tls_info, within
from mailgate.ingest.smtp_syntax import MAX_COMMAND_LINE

if TYPE_CHECKING:
    from mailgate.ingest.chunking import ChunkedBody
    from mailgate.ingest.smtp_data import DataEnd, DataReader, Spooled
    from mailgate.ingest.smtp_protocol import SmtpConfig, SmtpRecorder

__all__ = ["TOO_LONG", "SmtpEngine"]

log = logging.getLogger(__name__)


class _Marker(bytes):
    """A line that is no line: its own object, told apart with ``is``."""


TOO_LONG: bytes = _Marker()
"""What :meth:`SmtpEngine._take_line` gives for a line past :data:`MAX_COMMAND_LINE`."""

_MAX_PENDING = 256 * 1024  #: buffered input past which reading pauses until it is used
_MAX_VIOLATIONS = 20  #: refused commands remembered per session (a flood must not grow it)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], awaited: Any) -> Generator[Any, Any, None]:
    """Go on with ``coro`` from where its first, eager step stopped — waiting on
    ``awaited`` — as a task running it from the start would have: what the task sends or
    throws in (a cancellation) goes on to ``coro``."""
    while True:
        try:
            sent = yield awaited
        except BaseException as exc:
            try:
                awaited = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                awaited = coro.send(sent)
            except StopIteration:
                return


async def _finish(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    await _resume(coro, awaited)


class SmtpEngine(asyncio.Protocol):
    """One client's connection short of its verbs, which a subclass adds
    (:class:`~mailgate.ingest.smtp_protocol.SmtpConnection`). All of the session's state
    is kept here, in slots, so the verbs' classes add none."""

    __slots__ = ("_auth_needs_tls", "_bdat", "_bdat_end", "_bogus", "_buf", "_closing", "_data",
                 "_discarding", "_eof",
                 "_last_read", "_line_waiter", "_loop", "_paused_at",
                 "_read_paused", "_registered", "_stall", "_task", "_timer", "_tls",
                 "_turned_away", "_upgrading", "_write_paused", "close_after_reply", "config",
                 "draining", "envelope", "session", "transport", "violations")  # fmt: skip

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session = Session(None)
        self.envelope = Envelope()
        self.close_after_reply = False  #: a handler said CLOSE: 221 after the 250
        #: commands refused (5xx) since the session began or its last captured message
        self.violations: list[str] = []
        self.draining = False  #: shutting down: 421 once the current transaction ends
        self._buf = bytearray()
        self._data: DataReader | None = None
        self._bdat: ChunkedBody | None = None  #: the chunk whose octets are being read
        self._bdat_end: tuple[int, bool, str | None] = (0, False, None)  #: size, LAST, refusal
        self._task: asyncio.Task[None] | None = None
        self._line_waiter: asyncio.Future[bytes] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._paused_at = 0.0
        self._bogus = 0
        self._closing = False
        self._discarding = False
        self._eof = False  #: the client shut its side down: it sends no more
        self._read_paused = False
        self._write_paused = False
        self._registered = False
        self._turned_away = False
        self._tls = False
        self._upgrading = False
        self._auth_needs_tls = False

    # ------------------------------------------------------------------ asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        config = self.config
        if len(config.sessions) >= config.max_connections:
            self._turn_away(transport)
            return
        # only ever an SmtpConnection (the verbs' subclass), which the listener keeps
        config.sessions.add(self)  # type: ignore[arg-type]
        self._registered = True
        config.recorder.smtp_connected()
        peer = transport.get_extra_info("peername")
        self.session = Session(peer)
        networks = config.cleartext_auth_from
        self._auth_needs_tls = networks is not None and not within(peer, networks)
        self._last_read = now = self._loop.time()
        self._timer = self._loop.call_at(now + config.read_timeout, self._idle)
        if config.implicit_tls is not None:
            self._run(self._implicit_tls(config.implicit_tls))
            return
        transport.write(config.greeting)

    async def _implicit_tls(self, context: ssl.SSLContext) -> None:
        """RFC 8314 §3.3: TLS from the first octet, then the greeting. The connection
        holds its slot from the moment it is accepted, so handshakes in progress count
        against ``max_connections`` too."""
        if await self._handshake(context):
            assert self.transport is not None
            self.transport.write(self.config.greeting)

    async def _handshake(self, context: ssl.SSLContext) -> bool:
        """Turn the connection to TLS (after STARTTLS, or first on an implicit-TLS
        listener): True once it is, with a new :class:`Session`. False when the handshake
        failed or timed out, the session then let go here: asyncio tells a protocol
        nothing of a transport whose handshake failed (no ``connection_lost``), and the
        session would keep its slot, and the listener fill up, for ever."""
        transport = self.transport
        assert transport is not None
        self._upgrading = True
        try:
            secure = await self._loop.start_tls(
                transport, self, context, server_side=True,
                ssl_handshake_timeout=min(self.config.read_timeout, 30.0),
            )  # fmt: skip
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("SMTP %s: TLS handshake failed: %s", peer_text(self.session.peer), exc)
            self._let_go(transport, exc)
            return False
        except BaseException:  # cancelled (shutdown's grace is over)
            self._let_go(transport, None)
            raise
        finally:
            self._upgrading = False
        if secure is None or self._closing:
            return False
        assert isinstance(secure, asyncio.Transport)
        self.transport = secure
        self._tls = True
        self._read_paused = False
        self._auth_needs_tls = False
        self.session = Session(self.session.peer, tls_info(secure.get_extra_info("ssl_object")))
        return True

    def _let_go(self, transport: asyncio.Transport, exc: Exception | None) -> None:
        transport.abort()
        self.connection_lost(exc)

    def _turn_away(self, transport: asyncio.Transport) -> None:
        """RFC 5321 §3.1: a server that will not serve says 421 instead of 220. On an
        implicit-TLS listener the connection is closed before any TLS: a handshake only
        to say 421 would cost as much CPU as serving it."""
        self._turned_away = self._closing = True
        self.config.recorder.smtp_refused(Refusal.TOO_MANY_CONNECTIONS)
        if self.config.implicit_tls is None:
            host = self.config.hostname.encode("ascii", "replace")
            transport.write(b"421 4.7.0 " + host + b" Too many connections, try again later\r\n")
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        reader = self._data
        if reader is not None:
            if data.find(b"\n") >= 0:  # a line of the message has come in
                self._last_read = self._loop.time()
            end = reader.feed(data)
            if end is None:
                return
            self._end_data(end)
        elif (body := self._bdat) is not None:
            rest = body.feed(data)
            if rest is None:
                if len(data) >= 512:  # a byte now and then does not keep the session
                    self._last_read = self._loop.time()
                return
            self._buf += rest
            self._end_chunk()
        elif self._discarding and data.find(b"\n") < 0:
            return  # the rest of a command line too long to keep
        else:
            self._buf += data
        self._process()
        self._flow()

    def eof_received(self) -> bool | None:
        """The client has shut down its side (TCP half-close, as ``nc -N`` or ``socat`` do
        after a pipelined session): what it sent before is still answered — a message's
        250 among it, or a client told nothing sends again a message kept — and then the
        connection is closed (:meth:`_process`). Over TLS, or in the middle of a message
        that can no longer end, it is closed now (a command still running is cancelled)."""
        if self._tls or self._data is not None or self._bdat is not None:
            return None
        self._eof = True
        self._process()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._turned_away:
            return
        for handle in (self._timer, self._stall):
            if handle is not None:
                handle.cancel()
        if self._task is not None:
            self._task.cancel()
        if self._data is not None:  # gone in the middle of DATA
            self._data.discard()
        if self.envelope.chunked is not None:  # or between or within BDAT's chunks
            self.envelope.chunked.discard()
        if self._registered:
            self._registered = False
            self.config.sessions.discard(self)
            self.config.recorder.smtp_disconnected()

    def pause_writing(self) -> None:
        """The client is not reading its replies: stop reading its commands, and drop it
        if it still has not read them ``write_timeout`` seconds on."""
        self._write_paused = True
        self._paused_at = now = self._loop.time()
        self._flow()
        if self._stall is None:
            self._stall = self._loop.call_at(now + self.config.write_timeout, self._stalled)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self._last_read = self._loop.time()
        self._process()
        self._flow()

    def _stalled(self) -> None:
        self._stall = None
        if self._write_paused and self.transport is not None:
            log.info(
                "SMTP %s: replies unread for %g s; dropped",
                peer_text(self.session.peer),
                self.config.write_timeout,
            )
            self.transport.abort()

    def _idle(self) -> None:
        """RFC 5321 §4.5.3.2: a client that has not sent a complete line (a command, an
        AUTH answer, a line of DATA) for ``read_timeout`` is told so (421, §3.8) and the
        connection closed — dribbling a byte now and then does not keep it (as Postfix's
        ``smtpd_per_record_deadline``). Not while the server itself is busy with a command
        (the client's clock starts when the reply is out), nor while its replies go unread
        (the write timeout's business)."""
        self._timer = None
        if self._closing:
            return
        now = self._loop.time()
        timeout = self.config.read_timeout
        busy = self._task is not None and self._line_waiter is None
        deadline = now + timeout if busy or self._write_paused else self._last_read + timeout
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._idle)
            return
        log.info("%r connection timeout", self.session.peer)
        host = self.config.hostname.encode("ascii", "replace")
        self.say_goodbye(b"421 4.4.2 " + host + b" Error: timeout exceeded")

    def _flow(self) -> None:
        """Read only what can be used: not while replies go unread, nor past
        ``_MAX_PENDING`` octets waiting for a command still running."""
        transport = self.transport
        if transport is None or self._closing or self._upgrading:
            return
        pause = self._write_paused or len(self._buf) > _MAX_PENDING
        if pause is not self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # ------------------------------------------------------------------ the command loop

    def _process(self) -> None:
        """Run the buffered command lines in order until one has to wait for something, or
        no complete line is left; a line that a running command waits for goes to it."""
        while not (self._closing or self._write_paused or self._data or self._bdat):
            waiter = self._line_waiter
            if self._task is not None and waiter is None:
                return
            line = self._take_line()
            if line is None:
                if self._eof:  # every line the client sent is answered
                    self._close()
                return
            if waiter is not None:
                self._line_waiter = None
                if not waiter.done():
                    waiter.set_result(line)
            elif line is TOO_LONG:
                self._reply("500 Command line too long")
            else:
                self._command(line)
        if self._eof and (self._data is not None or self._bdat is not None):
            self._close()  # a message whose end can no longer come

    def _take_line(self) -> bytes | None:
        """The next complete line of the buffer, without its line end; :data:`TOO_LONG`
        for a line longer than :data:`MAX_COMMAND_LINE`, which is dropped (its reader
        answers it: a command's 500, or the end of an AUTH exchange)."""
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_COMMAND_LINE + 1:  # past a line and the CR of its CRLF
                buf.clear()
                self._discarding = True
            return None
        self._last_read = self._loop.time()
        length = end - 1 if end and buf[end - 1] == 13 else end  # its line end not counted
        if self._discarding or length > MAX_COMMAND_LINE:
            del buf[: end + 1]
            self._discarding = False
            return TOO_LONG
        line = bytes(buf[:length])
        del buf[: end + 1]
        return line

    def _command(self, line: bytes) -> None:
        """Run one command line. :class:`~mailgate.ingest.smtp_protocol.SmtpConnection`
        does, from its module's table of verbs, which imports this module."""
        raise NotImplementedError

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """Step ``coro`` now; if it has to wait, it goes on in a task, and the next
        command waits for it (:meth:`_ran`)."""
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._crashed(exc)
            return
        self._started(self._loop.create_task(_finish(coro, awaited)))

    def _started(self, task: asyncio.Task[None]) -> None:
        self._task = task
        task.add_done_callback(self._ran)

    def _ran(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._crashed(exc)
        self._last_read = self._loop.time()  # the client's turn starts now
        self._process()
        self._flow()

    def _crashed(self, exc: BaseException) -> None:
        log.error("SMTP %s: session error", peer_text(self.session.peer), exc_info=exc)
        self._reply("451 4.3.0 Error: local error in processing, try again later")

    async def _read_line(self) -> bytes:
        """The client's next line (an AUTH answer), as soon as it is there; :data:`TOO_LONG`
        (compare with ``is``) for one past :data:`MAX_COMMAND_LINE`."""
        line = self._take_line()
        if line is not None:
            return line
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._line_waiter = waiter
        return await waiter

    # ------------------------------------------------------------------ replies

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._closing:
            transport.write(data)

    def _reply(self, reply: str) -> None:
        if reply[0] == "5":
            self._violation(reply)
        self._write(reply.encode("utf-8", "surrogateescape") + b"\r\n")
        if self.close_after_reply and reply.startswith("250"):
            self.close_after_reply = False
            self.say_goodbye(b"221 2.0.0 Bye")  # a capture handler said CLOSE
        elif self.draining and not self.in_transaction:
            self.say_goodbye()  # its transaction has ended

    def _refuse(self, reason: Refusal, reply: str) -> None:
        self.config.recorder.smtp_refused(reason)
        self._reply(reply)

    def _chaos(self, stage: Stage) -> bool:
        """Whether a chaos trigger refused the command at ``stage`` (answered and counted).

        Only the command is refused: the session goes on, but for a 421, after which RFC
        5321 §3.8 has the server close. At ``data`` the transaction ends and the message
        is not kept. Not a client's fault, so not one of its :attr:`violations`."""
        reply = self.config.chaos.reply(stage)
        if reply is None:
            return False
        if stage is Stage.DATA:
            self._new_transaction()
        self.config.recorder.smtp_refused(Refusal.CHAOS)
        answer = reply.encode("ascii")
        if reply.startswith("421"):
            self.say_goodbye(answer)
            return True
        self._write(answer + b"\r\n")
        if self.draining and not self.in_transaction:
            self.say_goodbye()
        return True

    def _violation(self, reply: str) -> None:
        if len(self.violations) < _MAX_VIOLATIONS:
            self.violations.append(reply[:200])
            log.info("SMTP %s: %s", peer_text(self.session.peer), reply)

    def _close(self) -> None:
        transport = self.transport
        self._closing = True
        if transport is not None and not transport.is_closing():
            transport.close()

    def say_goodbye(self, reply: bytes = b"421 4.3.2 Service shutting down") -> None:
        """RFC 5321 §3.8: a server shutting down answers 421 and closes."""
        transport = self.transport
        # (after "220 Ready to start TLS" nothing but TLS is sent: not while upgrading)
        if transport is not None and not (
            self._closing or self._upgrading or transport.is_closing()
        ):
            transport.write(reply + b"\r\n")
        self._close()

    # ------------------------------------------------------------------ for the server

    @property
    def recorder(self) -> SmtpRecorder:
        return self.config.recorder

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task of the command running now, if it had to wait for something."""
        return self._task

    @property
    def in_transaction(self) -> bool:
        return self.envelope.mail_from is not None

    def drain(self) -> None:
        """Shutdown has begun: finish the transaction under way, if any, then hear 421."""
        self.draining = True
        if not self.in_transaction:
            self.say_goodbye()

    # ------------------------------------------------------------------ checks

    def _needs_helo(self, helo: str = "HELO") -> bool:
        if self.session.host_name:
            return False
        self._reply(f"503 Error: send {helo} first")
        return True

    def _needs_auth(self) -> bool:
        if not self.config.auth_required or self.session.authenticated:
            return False
        self._reply("530 5.7.0 Authentication required")
        return True

    def _reset(self) -> None:
        if self.envelope.mail_from is not None or self.envelope.rcpt_tos:
            self._new_transaction()

    def _new_transaction(self) -> None:
        """The transaction ends: an empty one in its place, and the file a half-sent BDAT
        message went to, if any, is removed."""
        if self.envelope.chunked is not None:
            self.envelope.chunked.discard()
        self.envelope = Envelope()

    # ------------------------------------------------------------------ the message's end

    def _end_data(self, end: DataEnd) -> None:
        self._data = None
        if end.rest:
            self._buf += end.rest
        if end.refusal is Refusal.TOO_BIG:
            self._new_transaction()
            self._refuse(end.refusal, "552 5.3.4 Too much mail data")
        elif end.refusal is Refusal.LINE_TOO_LONG:
            self._new_transaction()
            self._refuse(end.refusal, "500 Line too long (see RFC5321 4.5.3.1.6)")
        elif end.refusal is Refusal.STORE_UNAVAILABLE:
            self._new_transaction()
            self._unspooled(end.error)
        elif self.config.chaos.armed and self._chaos(Stage.DATA):
            _remove(end.spooled)
        else:
            self.envelope.original_content = end.content
            self.envelope.line_endings = end.endings
            self.envelope.spooled = end.spooled
            self._started(self._loop.create_task(self._deliver()))

    def _end_chunk(self) -> None:
        """A chunk's octets are in: its reply, or at LAST the message to the handler."""
        body, (size, last, refusal) = self._bdat, self._bdat_end
        assert body is not None
        self._bdat = None
        self._last_read = self._loop.time()
        if refusal is not None:
            self._reply(refusal)
        elif not last:
            self._reply(f"250 2.0.0 {size} octets received")
        else:
            self._end_chunks(body)

    def _end_chunks(self, body: ChunkedBody) -> None:
        """BDAT LAST: the message, in memory or in its file, to the handler."""
        content, spooled = body.end()
        if body.unwritable is not None:
            self._new_transaction()
            self._unspooled(body.unwritable)
        elif content is None and spooled is None:
            self._new_transaction()
            self._refuse(Refusal.TOO_BIG, "552 5.3.4 Too much mail data")
        elif self.config.chaos.armed and self._chaos(Stage.DATA):
            _remove(spooled)
        else:
            self.envelope.original_content = content
            self.envelope.line_endings = body.endings
            self.envelope.spooled = spooled
            self._started(self._loop.create_task(self._deliver()))

    def _unspooled(self, error: OSError | None) -> None:
        """The message could not be written to the spool (tempfile mode: a full disk, a
        temp_dir that is no directory): RFC 5321 §4.2.2's 452 with RFC 3463's 4.3.1,
        and the operator is told why."""
        log.error("SMTP %s: could not write a message to the spool: %s",
                  peer_text(self.session.peer), error)  # fmt: skip
        self._refuse(
            Refusal.STORE_UNAVAILABLE, "452 4.3.1 Insufficient system storage, try again later"
        )

    async def _deliver(self) -> None:
        """The handler's answer to a message; the transaction ends before the reply."""
        envelope = self.envelope
        hook = self.config.data_hook
        try:
            reply = "250 OK" if hook is None else await hook(self, self.session, envelope)
        finally:
            _remove(envelope.spooled)  # the handler has read it (or failed to)
            if envelope.spooled is not None or envelope.line_endings is not None:
                heap.TRIM.soon()  # a big one (past HELD_WHOLE): give its memory back
            if self.envelope is envelope:
                self._new_transaction()
        self._reply(reply)


def _remove(spooled: Spooled | None) -> None:
    """Remove a spooled message's file: its handler is done with it."""
    if spooled is not None:
        spooled.path.unlink(missing_ok=True)
