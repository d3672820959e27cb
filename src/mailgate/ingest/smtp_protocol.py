"""The SMTP protocol engine (RFC 5321) of mailgate's server: one :class:`SmtpConnection`
(an :class:`asyncio.Protocol`) per client, sharing one :class:`SmtpConfig` per listener.

Why not aiosmtpd's: under a new connection per message its per-session set-up
(``inspect.getmembers`` on every connection), its address parsing (a class defined per
call) and a timeout object per command and per reply were about 60% of the capture
server's CPU, and it read DATA a line at a time (docs/benchmarks.md). Here:

* bytes arrive in :meth:`SmtpConnection.data_received` into one buffer; command lines are
  split on LF (a CR before it dropped, as aiosmtpd did) and run in order, so pipelined
  commands (RFC 2920) are answered in order. A command runs *eagerly*: its coroutine is
  stepped in place and only becomes a task if it has to wait (a store commit, a password
  hash, an AUTH answer still to come, a TLS handshake), while later lines wait in the
  buffer. DATA is always a task: the handler's work (parse, commit, capture handlers) is.
* DATA is read in blocks: the buffer is searched for ``CRLF.CRLF`` (RFC 5321 §4.1.1.4;
  only that ends it: never ``LF.LF``, see ``bare_line_endings`` in :mod:`.smtp`) and
  unstuffed with one ``bytes.replace`` (§4.5.2) — :class:`DataReader`.
* BDAT chunks (RFC 3030) are counted off the buffer, not searched:
  :class:`~mailgate.ingest.chunking.ChunkedBody`; at ``BDAT … LAST`` the message takes
  DATA's way to the handler (``handle_DATA``, ``envelope.original_content``).
* one idle timer per connection, re-armed only when it fires before its deadline; a
  write timeout only while the transport's buffer is over its high-water mark
  (:meth:`SmtpConnection.pause_writing`).

The replies are aiosmtpd 1.4's, word for word where a client or a test may read them,
with RFC 3463 codes where mailgate added them (552 5.3.4). Handlers keep aiosmtpd's hook
interface: ``handle_EHLO/MAIL/RCPT/DATA(server, session, envelope, ...)`` return the reply,
``authenticate(...)`` returns an :class:`AuthResult`, and an optional async ``verify``
checks credentials off the loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import re
import secrets
import ssl
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from mailgate.ingest.chaos import Chaos, Stage
from mailgate.ingest.chunking import ChunkedBody, bdat_args

__all__ = [
    "AuthResult",
    "CramMd5",
    "DataEnd",
    "DataReader",
    "Envelope",
    "LoginPassword",
    "Networks",
    "Refusal",
    "Session",
    "SmtpConfig",
    "SmtpConnection",
    "SmtpRecorder",
    "long_line",
    "mail_params",
    "parse_path",
    "peer_text",
    "split_command",
    "unstuffed",
]

log = logging.getLogger(__name__)

MAX_COMMAND_LINE = 2048
"""Octets of a command line, its LF not counted. RFC 5321 §4.5.3.1.4 allows 512 and its
extensions more (RFC 1870's SIZE, RFC 4954's AUTH initial response); longer lines are
refused with 500 and thrown away up to their end, so no line is ever buffered whole."""

MAX_DATA_LINE = 1001
"""Octets of a DATA line without its CRLF (RFC 5321 §4.5.3.1.6: 1,000 with the CRLF, plus
a transparency dot; the 1,001 aiosmtpd allowed, so nothing it took is refused now)."""

_MAX_PENDING = 256 * 1024  #: buffered input past which reading pauses until it is used
_MAX_VIOLATIONS = 20  #: refused commands remembered per session (a flood must not grow it)
_MAX_BOGUS = 5  #: unknown commands before the session is ended (as aiosmtpd: 502, close)


class Refusal(StrEnum):
    """Why the server refused a message, or one of its recipients (a metrics label)."""

    TOO_BIG = "too_big"  #: over the size limit, announced with SIZE or sent (RFC 1870: 552)
    TOO_MANY_RECIPIENTS = "too_many_recipients"  #: RCPT past the limit (RFC 5321 §4.5.3.1.10)
    BAD_ADDRESS = "bad_address"  #: a malformed MAIL FROM or RCPT TO address (553)
    LINE_TOO_LONG = "line_too_long"  #: a DATA line past the limit (RFC 5321 §4.5.3.1.6)
    STORE_UNAVAILABLE = "store_unavailable"  #: the capture could not be committed (451)
    TOO_MANY_CONNECTIONS = "too_many_connections"  #: over smtp.max_connections (421)
    AUTH_THROTTLED = "auth_throttled"  #: too many failed AUTH from the address (421)
    CHAOS = "chaos"  #: a chaos trigger fired (:mod:`mailgate.ingest.chaos`)


class SmtpRecorder(Protocol):
    """Where the server reports what it did (:class:`mailgate.metrics.Metrics`)."""

    def smtp_connected(self) -> None: ...
    def smtp_disconnected(self) -> None: ...
    def smtp_accepted(self, size: int) -> None: ...
    def smtp_refused(self, reason: str) -> None: ...
    def smtp_auth(self, mechanism: str, *, success: bool) -> None: ...


class Throttle(Protocol):
    """Failed AUTH per client address (:class:`mailgate.ingest.smtp.AuthThrottle`)."""

    def blocked(self, client: str) -> bool: ...
    def failed(self, client: str) -> None: ...


# --------------------------------------------------------------------------- values


class LoginPassword(NamedTuple):
    """The credentials of AUTH PLAIN or LOGIN, as the client sent them."""

    login: bytes
    password: bytes


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


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    """A handler's verdict on credentials. ``handled``: on failure, the reply has been
    sent already; else ``message`` or ``535 5.7.8`` is. ``auth_data`` is kept on the
    session (:attr:`Session.auth_data`) when it succeeds."""

    success: bool
    handled: bool = True
    message: str | None = None
    auth_data: Any = None


class Session:
    """What a connection knows of its client; new after STARTTLS (RFC 3207 §4.2)."""

    __slots__ = ("auth_data", "authenticated", "extended_smtp", "host_name", "peer", "ssl")

    def __init__(self, peer: Any, ssl: dict[str, Any] | None = None) -> None:
        self.peer = peer  #: the client's socket address
        self.ssl = ssl  #: the TLS version and cipher; None in clear text
        self.host_name: str | None = None  #: what HELO/EHLO said
        self.extended_smtp = False  #: EHLO (not HELO)
        self.authenticated = False
        self.auth_data: Any = None  #: the successful AUTH's :attr:`AuthResult.auth_data`


class Envelope:
    """One mail transaction (RFC 5321 §3.3): from MAIL to the end of DATA or RSET."""

    __slots__ = ("chunked", "mail_from", "mail_options", "original_content", "rcpt_options",
                 "rcpt_tos", "smtp_utf8")  # fmt: skip

    def __init__(self) -> None:
        self.mail_from: str | None = None  #: "" for the null reverse-path ``<>``
        self.mail_options: list[str] = []
        self.smtp_utf8 = False
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []
        self.original_content: bytes | None = None  #: the message, unstuffed
        #: the BDAT chunks so far (RFC 3030); None while no BDAT was taken (DATA may come)
        self.chunked: ChunkedBody | None = None


# --------------------------------------------------------------------------- pure parts


def split_command(line: bytes | bytearray) -> tuple[str, str | None] | None:
    """The verb (upper case) and the argument (stripped; None if there is none) of a
    command line without its line end; None when it is no command: empty, a NUL in it, or
    a verb that is not letters and digits (what the 500 would echo back)."""
    if b"\0" in line:
        return None
    verb, _, arg = bytes(line).partition(b" ")
    if not verb.isalnum():  # bytes.isalnum: ASCII letters and digits only
        return None
    arg = arg.strip()
    # an argument that is not UTF-8 keeps its bytes (surrogateescape), as aiosmtpd did
    return verb.decode("ascii").upper(), arg.decode("utf-8", "surrogateescape") if arg else None


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
#: ``<Dot-string@Domain>`` (RFC 5321 §4.1.2), nearly every path a client sends
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>")


def parse_path(arg: str) -> tuple[str, str] | None:
    """The address of a MAIL FROM or RCPT TO path (RFC 5321 §4.1.2) and the text after it
    (its parameters): ``""`` for the null path ``<>``, None when it is malformed.

    A plain ``<local@domain>`` is matched with one regular expression; anything else
    (quoted local parts, source routes, address literals, non-ASCII, no brackets) goes to
    the email package's RFC 5322 parser, as aiosmtpd parsed every address."""
    plain = _PLAIN_PATH.match(arg)
    if plain is not None:
        return plain.group(1), arg[plain.end() :]
    if arg.startswith("<>"):
        return "", arg[2:]
    try:
        if arg.lstrip().startswith("<"):
            angle, rest = get_angle_addr(arg)
            address = angle.addr_spec
        else:
            spec, rest = get_addr_spec(arg)
            address = spec.addr_spec
    except (HeaderParseError, IndexError):
        return None
    return (address, rest) if address else None


def mail_params(options: list[str]) -> dict[str, str | bool] | None:
    """ESMTP parameters (RFC 5321 §4.1.2 ``esmtp-param``): keyword → value, or True for a
    keyword without one; None if one is malformed."""
    params: dict[str, str | bool] = {}
    for option in options:
        keyword, eq, value = option.partition("=")
        if not keyword.isalnum() or (eq and not value):
            return None
        params[keyword] = value if eq else True
    return params


def long_line(data: bytes | bytearray, limit: int = MAX_DATA_LINE, start: int = 0) -> bool:
    """Whether a CRLF-ended line of ``data[start:]`` is longer than ``limit`` octets
    without its CRLF. Hops a window at a time (the last CRLF in each window starts the
    next), so a 10 MB message costs some ten thousand searches, not one per line."""
    end = len(data)
    while end - start > limit:
        crlf = data.rfind(b"\r\n", start, start + limit + 2)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


class DataEnd(NamedTuple):
    """The end of a DATA block: the message, or why it is refused; and what came after."""

    content: bytes | None  #: unstuffed, with its last CRLF; None when refused
    refusal: Refusal | None  #: TOO_BIG or LINE_TOO_LONG
    rest: bytes  #: the bytes after ``CRLF.CRLF``: the client's next commands (RFC 2920)


class DataReader:
    """Reads one DATA block from the chunks as they arrive (RFC 5321 §4.1.1.4).

    The block ends at the first ``CRLF.CRLF``; the CRLF of the DATA command line counts
    as the first CRLF, so ``.CRLF`` right away is an empty message, and a terminator split
    across chunks is found (the last four octets are kept for that). The chunks are kept
    as they came and joined once at the end: no buffer grown and copied as they arrive.
    Past ``limit`` octets (0: none) the rest is read and thrown away and the block is
    refused at its end, as RFC 5321 §4.2.5 has the server answer only then.
    """

    __slots__ = ("_chunks", "_limit", "_received", "_tail", "_too_big")

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._tail = b"\r\n"  # the DATA line's CRLF: a line starts here
        self._limit = limit
        self._received = 0
        self._too_big = False

    def feed(self, chunk: bytes) -> DataEnd | None:
        """Take the next chunk; the end of the block once its terminator has arrived."""
        tail = self._tail
        received = self._received + len(chunk)
        self._received = received
        after = _after_end(tail, chunk)
        if after is None:  # not yet; up to 3 octets (".\r\n") may be the end's
            if self._limit and received - 3 > self._limit:
                self._too_big = True
                self._chunks.clear()
            elif chunk:
                self._chunks.append(chunk)
            self._tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
            return None
        rest = chunk[after:]
        size = received - len(rest) - 3  # the stuffed content, its last CRLF included
        if self._too_big or (self._limit and size > self._limit):
            return DataEnd(None, Refusal.TOO_BIG, rest)
        content = _joined(self._chunks, chunk, size)
        self._chunks = []
        if long_line(content):
            return DataEnd(None, Refusal.LINE_TOO_LONG, rest)
        return DataEnd(unstuffed(content), None, rest)


def _after_end(tail: bytes, chunk: bytes) -> int | None:
    """Where in ``chunk`` what follows ``CRLF.CRLF`` begins, if it ends there; the end may
    begin in ``tail``, the octets before ``chunk``."""
    joint = (tail + chunk[:4]).find(b"\r\n.\r\n")
    if joint >= 0:
        return joint - len(tail) + 5
    inside = chunk.find(b"\r\n.\r\n")
    return inside + 5 if inside >= 0 else None


def _joined(chunks: list[bytes], last: bytes, size: int) -> bytes:
    """The first ``size`` octets of ``chunks`` and ``last``: the end's ``.CRLF`` (and what
    came after it) cut off, which may begin in the chunk before ``last``."""
    excess = sum(map(len, chunks)) + len(last) - size
    pieces = [*chunks, last]
    while excess > 0:
        cut = min(excess, len(pieces[-1]))
        pieces[-1] = pieces[-1][: len(pieces[-1]) - cut]
        excess -= cut
        if not pieces[-1]:
            pieces.pop()
    return b"".join(pieces)


def unstuffed(content: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line's leading dot, which the client added, goes."""
    if content[:1] == b".":
        content = content[1:]
    if content.find(b"\r\n.") >= 0:
        content = content.replace(b"\r\n.", b"\r\n")
    return content


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def within(peer: Any, networks: Networks) -> bool:
    """Whether the client's address is in one of ``networks``."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    try:
        address = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def peer_text(peer: Any) -> str | None:
    """``host:port`` of a socket address."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None if peer is None else str(peer)


# --------------------------------------------------------------------------- configuration

Hook = Callable[..., Awaitable[Any]]

#: HELP's texts (aiosmtpd's): command → (syntax, what EHLO adds)
_SYNTAX = {
    "AUTH": ("AUTH <mechanism>", ""),
    "BDAT": ("BDAT <size> [LAST]", ""),
    "DATA": ("DATA", ""),
    "EHLO": ("EHLO hostname", ""),
    "HELO": ("HELO hostname", ""),
    "HELP": ("HELP [command]", ""),
    "MAIL": ("MAIL FROM: <address>", " [SP <mail-parameters>]"),
    "NOOP": ("NOOP [ignored]", ""),
    "QUIT": ("QUIT", ""),
    "RCPT": ("RCPT TO: <address>", " [SP <mail-parameters>]"),
    "RSET": ("RSET", ""),
    "STARTTLS": ("STARTTLS", ""),
    "VRFY": ("VRFY <address>", ""),
}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """What every connection of one listener shares, worked out once and not per client.

    ``sessions``: the open connections (shutdown finds them there; at
    ``max_connections`` the next one hears 421). ``tls_context``: STARTTLS is offered
    with it (None on an implicit-TLS listener). ``cleartext_auth_from``: AUTH only over
    TLS but from these networks (submission); None: no such rule. ``auth_required``:
    AUTH before MAIL (530). ``mechanisms``: the AUTH mechanisms offered. ``chaos``: the
    triggers refusing AUTH, MAIL, RCPT or a message on purpose (capture); one never
    armed by default. The handler's hooks are looked up here, once."""

    handler: Any
    hostname: str
    max_message_size: int
    read_timeout: float
    write_timeout: float
    recorder: SmtpRecorder
    sessions: set[SmtpConnection]
    max_connections: int = 500
    tls_context: ssl.SSLContext | None = None
    auth_required: bool = False
    cleartext_auth_from: Networks | None = None
    throttle: Throttle | None = None
    mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN")
    chaos: Chaos = field(default_factory=Chaos)
    ident: str = "mailgate ESMTP"
    greeting: bytes = field(init=False)
    ehlo_hook: Hook | None = field(init=False)
    mail_hook: Hook | None = field(init=False)
    rcpt_hook: Hook | None = field(init=False)
    data_hook: Hook | None = field(init=False)
    verify: Hook | None = field(init=False)

    def __post_init__(self) -> None:
        greeting = f"220 {self.hostname} {self.ident}\r\n".encode("ascii", "replace")
        object.__setattr__(self, "greeting", greeting)
        for attribute, name in (("ehlo_hook", "handle_EHLO"), ("mail_hook", "handle_MAIL"),
                                ("rcpt_hook", "handle_RCPT"), ("data_hook", "handle_DATA"),
                                ("verify", "verify")):  # fmt: skip
            object.__setattr__(self, attribute, getattr(self.handler, name, None))

    def ehlo_lines(self, *, starttls: bool, auth: bool) -> list[str]:
        """EHLO's reply before the handler's hook (RFC 5321 §4.1.1.1; RFC 1870 SIZE, RFC 6152
        8BITMIME, RFC 6531 SMTPUTF8, RFC 3030 CHUNKING, RFC 3207 STARTTLS, RFC 4954 AUTH)."""
        lines = [f"250-{self.hostname}"]
        if self.max_message_size:
            lines.append(f"250-SIZE {self.max_message_size}")
        lines += ["250-8BITMIME", "250-SMTPUTF8", "250-CHUNKING"]
        if starttls:
            lines.append("250-STARTTLS")
        if auth:
            lines.append("250-AUTH " + " ".join(sorted(self.mechanisms)))
        lines.append("250 HELP")
        return lines


# --------------------------------------------------------------------------- the engine


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


_Command = Callable[["SmtpConnection", "str | None"], Coroutine[Any, Any, None]]

_CODE_SUCCESS = "235 2.7.0 Authentication successful"
_CODE_INVALID = "535 5.7.8 Authentication credentials invalid"
_LOGIN_USERNAME = b"User Name\x00"  # aiosmtpd's challenges
_LOGIN_PASSWORD = b"Password\x00"


class SmtpConnection(asyncio.Protocol):
    """One client's SMTP session. Handlers get it as their ``server`` argument."""

    __slots__ = ("_auth_needs_tls", "_bdat", "_bdat_end", "_bogus", "_buf", "_closing", "_data",
                 "_discarding",
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
        config.sessions.add(self)
        self._registered = True
        config.recorder.smtp_connected()
        peer = transport.get_extra_info("peername")
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls = ssl_object is not None
        self.session = Session(peer, _tls_info(ssl_object))
        networks = config.cleartext_auth_from
        self._auth_needs_tls = networks is not None and not self._tls and not within(peer, networks)
        self._last_read = now = self._loop.time()
        self._timer = self._loop.call_at(now + config.read_timeout, self._idle)
        transport.write(config.greeting)

    def _turn_away(self, transport: asyncio.Transport) -> None:
        """RFC 5321 §3.1: a server that will not serve says 421 instead of 220."""
        self._turned_away = self._closing = True
        self.config.recorder.smtp_refused(Refusal.TOO_MANY_CONNECTIONS)
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
        elif self._bdat is not None:
            rest = self._bdat.feed(data)
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
        return None  # the client is done: close (a command still running is cancelled)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._turned_away:
            return
        for handle in (self._timer, self._stall):
            if handle is not None:
                handle.cancel()
        if self._task is not None:
            self._task.cancel()
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
                return
            if waiter is not None:
                self._line_waiter = None
                if not waiter.done():
                    waiter.set_result(line)
            else:
                self._command(line)

    def _take_line(self) -> bytes | None:
        """The next complete line of the buffer, without its line end. A line longer than
        :data:`MAX_COMMAND_LINE` is answered 500 here and dropped."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_COMMAND_LINE:
                    buf.clear()
                    self._discarding = True
                return None
            if self._discarding or end > MAX_COMMAND_LINE + 1:
                del buf[: end + 1]
                self._discarding = False
                self._reply("500 Command line too long")
                if self._closing:
                    return None
                continue
            line = bytes(buf[: end - 1] if end and buf[end - 1] == 13 else buf[:end])
            del buf[: end + 1]
            self._last_read = self._loop.time()
            return line

    def _command(self, line: bytes) -> None:
        parts = split_command(line)
        if parts is None:
            self._reply("500 Error: bad syntax")
            return
        verb, arg = parts
        method = _COMMANDS.get(verb)
        if method is None:
            self._bogus += 1
            if self._bogus >= _MAX_BOGUS:
                self._reply("502 5.5.1 Too many unrecognized commands, goodbye.")
                self._close()
                return
            self._reply(f'500 Error: command "{verb[:32]}" not recognized')
            return
        self._run(method(self, arg))

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
        """The client's next line (an AUTH answer), as soon as it is there."""
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
            self.envelope = Envelope()
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
        if transport is not None and not self._closing and not transport.is_closing():
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
            self.envelope = Envelope()

    # ------------------------------------------------------------------ commands

    async def _helo(self, arg: str | None) -> None:
        if not arg:
            self._reply("501 Syntax: HELO hostname")
            return
        self._reset()
        self.session.extended_smtp = False
        self.session.host_name = arg
        self._reply(f"250 {self.config.hostname}")

    async def _ehlo(self, arg: str | None) -> None:
        if not arg:
            self._reply("501 Syntax: EHLO hostname")
            return
        self._reset()
        session = self.session
        session.extended_smtp = True
        lines = self.config.ehlo_lines(
            starttls=self.config.tls_context is not None and not self._tls,
            auth=not self._auth_needs_tls,
        )
        hook = self.config.ehlo_hook
        if hook is not None:
            lines = await hook(self, session, self.envelope, arg, lines)
        else:
            session.host_name = arg
        self._write("".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape"))

    async def _noop(self, arg: str | None) -> None:
        self._reply("250 OK")

    async def _quit(self, arg: str | None) -> None:
        if arg:
            self._reply("501 Syntax: QUIT")
            return
        self._reply("221 Bye")
        self._close()

    async def _rset(self, arg: str | None) -> None:
        if arg:
            self._reply("501 Syntax: RSET")
            return
        self._reset()
        self._reply("250 OK")

    async def _vrfy(self, arg: str | None) -> None:
        if self._needs_auth():
            return
        if not arg:
            self._reply("501 Syntax: VRFY <address>")
        elif parse_path(arg) is None:
            self._reply("502 Could not VRFY " + arg)
        else:  # RFC 5321 §3.5.3
            self._reply("252 Cannot VRFY user, but will accept message and attempt delivery")

    async def _expn(self, arg: str | None) -> None:
        self._reply("502 EXPN not implemented")

    async def _help(self, arg: str | None) -> None:
        if self._needs_auth():
            return
        code = 250
        if arg:
            syntax = _SYNTAX.get(arg.upper())
            if syntax is not None and (arg.upper() != "STARTTLS" or self.config.tls_context):
                extended = syntax[1] if self.session.extended_smtp else ""
                self._reply(f"250 Syntax: {syntax[0]}{extended}")
                return
            code = 501
        offered = [c for c in _SYNTAX if c != "STARTTLS" or self.config.tls_context]
        self._reply(f"{code} Supported commands: {' '.join(offered)}")

    async def _mail(self, arg: str | None) -> None:
        path = _after_keyword(arg, "FROM:")
        if path is not None and _unbalanced(path):
            self._reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        if self._needs_helo() or self._needs_auth():
            return
        session, envelope = self.session, self.envelope
        found = self._path(path, "MAIL FROM")
        if found is None:
            return
        address, options, syntax = found
        if options and not session.extended_smtp:
            self._reply(syntax)
            return
        if envelope.mail_from is not None:
            self._reply("503 Error: nested MAIL command")
            return
        reply = self._mail_params(options, syntax)
        if reply is not None:
            if reply.startswith("552"):
                self._refuse(Refusal.TOO_BIG, reply)
            else:
                self._reply(reply)
            return
        if self.config.chaos.armed and self._chaos(Stage.MAIL):
            return
        envelope.smtp_utf8 = "SMTPUTF8" in options
        hook = self.config.mail_hook
        if hook is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            self._reply("250 OK")
            return
        self._reply(await hook(self, session, envelope, address, options))

    def _path(self, path: str | None, verb: str) -> tuple[str, list[str], str] | None:
        """MAIL's or RCPT's address, its parameters (upper-cased) and the verb's syntax
        reply; None once a refusal was sent (no path, or a malformed address)."""
        syntax = f"501 Syntax: {verb}: <address>" + (
            " [SP <mail-parameters>]" if self.session.extended_smtp else ""
        )
        if not path:
            self._reply(syntax)
            return None
        parsed = parse_path(path)
        if parsed is None:
            self._refuse(Refusal.BAD_ADDRESS, "553 5.1.3 Error: malformed address")
            return None
        address, rest = parsed
        return address, rest.upper().split(), syntax

    def _mail_params(self, options: list[str], syntax: str) -> str | None:
        """The refusal of MAIL's parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
        SMTPUTF8), or None."""
        params = mail_params(options)
        if params is None:
            return syntax
        body = params.pop("BODY", "7BIT")
        if body not in ("7BIT", "8BITMIME"):
            return "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        if params.pop("SMTPUTF8", True) is not True:
            return "501 Error: SMTPUTF8 takes no arguments"
        size = params.pop("SIZE", None)
        if size is not None:
            if not isinstance(size, str) or not size.isdigit():
                return syntax
            limit = self.config.max_message_size
            if limit and int(size) > limit:
                return "552 5.3.4 Message size exceeds fixed maximum message size"
        if params:
            return "555 MAIL FROM parameters not recognized or not implemented"
        return None

    async def _rcpt(self, arg: str | None) -> None:
        path = _after_keyword(arg, "TO:")
        if path is not None and _unbalanced(path):
            self._reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        if self._needs_helo() or self._needs_auth():
            return
        session, envelope = self.session, self.envelope
        if envelope.mail_from is None:
            self._reply("503 Error: need MAIL command")
            return
        found = self._path(path, "RCPT TO")
        if found is None:
            return
        address, options, syntax = found
        params = mail_params(options)
        if not address or params is None or (options and not session.extended_smtp):
            self._reply(syntax)
            return
        if params:
            self._reply("555 RCPT TO parameters not recognized or not implemented")
            return
        if self.config.chaos.armed and self._chaos(Stage.RCPT):
            return
        hook = self.config.rcpt_hook
        if hook is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            self._reply("250 OK")
            return
        self._reply(await hook(self, session, envelope, address, options))

    async def _data_command(self, arg: str | None) -> None:
        if self._needs_helo() or self._needs_auth():
            return
        if not self.envelope.rcpt_tos:
            self._reply("503 Error: need RCPT command")
            return
        if self.envelope.chunked is not None:  # RFC 3030 §3: not both in one transaction
            self._reply("503 5.5.1 Error: DATA after BDAT in the same transaction")
            return
        if arg:
            self._reply("501 Syntax: DATA")
            return
        self._reply("354 End data with <CR><LF>.<CR><LF>")
        self._data = reader = DataReader(self.config.max_message_size)
        if self._buf:  # pipelined (RFC 2920 §3.1: DATA may be the last command of a group)
            pending = bytes(self._buf)
            self._buf.clear()
            end = reader.feed(pending)
            if end is not None:
                self._end_data(end)

    def _end_data(self, end: DataEnd) -> None:
        self._data = None
        if end.rest:
            self._buf += end.rest
        if end.refusal is Refusal.TOO_BIG:
            self.envelope = Envelope()
            self._refuse(end.refusal, "552 5.3.4 Too much mail data")
        elif end.refusal is Refusal.LINE_TOO_LONG:
            self.envelope = Envelope()
            self._refuse(end.refusal, "500 Line too long (see RFC5321 4.5.3.1.6)")
        elif not (self.config.chaos.armed and self._chaos(Stage.DATA)):
            self.envelope.original_content = end.content
            self._started(self._loop.create_task(self._deliver()))

    async def _bdat_command(self, arg: str | None) -> None:
        """RFC 3030 §2: the chunk's octets follow the command line at once, whatever the
        answer will be, so they are read (and thrown away when the chunk is refused) before
        the reply. A malformed size leaves no way to find the next command: 501, close."""
        parsed = bdat_args(arg)
        if parsed is None:
            self._reply("501 5.5.4 Syntax: BDAT <size> [LAST]")
            self._close()
            return
        size, last = parsed
        refusal = self._bdat_refusal()
        envelope = self.envelope
        if refusal is not None:
            body = ChunkedBody(0, keep=False)
        elif envelope.chunked is None:
            body = envelope.chunked = ChunkedBody(self.config.max_message_size)
        else:
            body = envelope.chunked
        body.expect(size)
        self._bdat, self._bdat_end = body, (size, last, refusal)
        buf = self._buf  # the octets pipelined with the command (RFC 3030 §4.2)
        taken = min(size, len(buf))
        rest = body.feed(bytes(buf[:taken]))
        del buf[:taken]
        if rest is not None:
            self._end_chunk()

    def _bdat_refusal(self) -> str | None:
        """Why a BDAT chunk is refused before its octets are read, or None."""
        if not self.session.host_name:
            return "503 Error: send HELO first"
        if self.config.auth_required and not self.session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.envelope.mail_from is None:
            return "503 5.5.1 Error: need MAIL command"
        if not self.envelope.rcpt_tos:
            return "503 5.5.1 Error: need RCPT command"
        return None

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
        elif (content := body.content()) is None:
            self.envelope = Envelope()
            self._refuse(Refusal.TOO_BIG, "552 5.3.4 Too much mail data")
        elif not (self.config.chaos.armed and self._chaos(Stage.DATA)):
            self.envelope.original_content = content
            self._started(self._loop.create_task(self._deliver()))

    async def _deliver(self) -> None:
        """The handler's answer to a message; the transaction ends before the reply."""
        envelope = self.envelope
        hook = self.config.data_hook
        try:
            reply = "250 OK" if hook is None else await hook(self, self.session, envelope)
        finally:
            if self.envelope is envelope:
                self.envelope = Envelope()
        self._reply(reply)

    async def _starttls(self, arg: str | None) -> None:
        """RFC 3207: what the client sent after STARTTLS in clear text is dropped, and the
        session starts again over TLS (a new :class:`Session`, no EHLO, no AUTH)."""
        context = self.config.tls_context
        if arg:
            self._reply("501 Syntax: STARTTLS")
            return
        if context is None:
            self._reply("454 TLS not available")
            return
        if self._tls:
            self._reply("554 5.5.1 Error: TLS already active")
            return
        transport = self.transport
        assert transport is not None
        self._buf.clear()  # §4: pipelined commands after STARTTLS are not taken
        self._reply("220 Ready to start TLS")
        self._upgrading = True
        try:
            secure = await self._loop.start_tls(
                transport, self, context, server_side=True,
                ssl_handshake_timeout=min(self.config.read_timeout, 30.0),
            )  # fmt: skip
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("SMTP %s: TLS handshake failed: %s", peer_text(self.session.peer), exc)
            transport.abort()
            return
        finally:
            self._upgrading = False
        if secure is None or self._closing:
            return
        assert isinstance(secure, asyncio.Transport)
        self.transport = secure
        self._tls = True
        self._read_paused = False
        self._auth_needs_tls = False
        self.session = Session(self.session.peer, _tls_info(secure.get_extra_info("ssl_object")))
        self.envelope = Envelope()

    # ------------------------------------------------------------------ AUTH (RFC 4954)

    async def _auth(self, arg: str | None) -> None:
        throttle = self.config.throttle
        if throttle is not None and throttle.blocked(self._client()):
            self.config.recorder.smtp_refused(Refusal.AUTH_THROTTLED)
            self.say_goodbye(b"421 4.7.0 Too many failed authentication attempts, try later")
            return
        if self._needs_helo("EHLO"):
            return
        session = self.session
        if not session.extended_smtp:
            self._reply("500 Error: command 'AUTH' not recognized")
        elif self._auth_needs_tls:
            self._reply("538 5.7.11 Encryption required for requested authentication mechanism")
        elif session.authenticated:
            self._reply("503 Already authenticated")
        elif not arg:
            self._reply("501 Not enough value")
        elif len(args := arg.split()) > 2:
            self._reply("501 Too many values")
        elif (mechanism := args[0].upper()) not in self.config.mechanisms:
            self._reply("504 5.5.4 Unrecognized authentication type")
        elif not (self.config.chaos.armed and self._chaos(Stage.AUTH)):
            result = await self._attempt(mechanism, args[1] if len(args) > 1 else None)
            if result.success:
                session.authenticated = True
                session.auth_data = result.auth_data
                self._reply(result.message or _CODE_SUCCESS)
            elif not result.handled:
                self._reply(result.message or _CODE_INVALID)

    async def _attempt(self, mechanism: str, initial: str | None) -> AuthResult:
        """One AUTH attempt: the mechanism's exchange, the handler's verdict, then ``verify``
        (off the loop: submission's password hashes). Anything short of success (RFC 4954
        §4: 235) is a failure, a ``*`` abort or an answer that is not base64 included."""
        if mechanism == "PLAIN":
            result = await self._plain(initial)
        elif mechanism == "LOGIN":
            result = await self._login(initial)
        else:
            result = await self._cram_md5(initial)
        verify = self.config.verify
        if result.success and verify is not None:
            identity = await verify(result.auth_data)
            result = (
                AuthResult(success=False, handled=False)
                if identity is None
                else AuthResult(success=True, auth_data=identity)
            )
        self.config.recorder.smtp_auth(mechanism, success=result.success)
        throttle = self.config.throttle
        if not result.success and throttle is not None:
            throttle.failed(self._client())
        return result

    async def _plain(self, initial: str | None) -> AuthResult:
        """RFC 4616: ``authzid NUL authcid NUL passwd``."""
        if initial is None:
            answer = await self._challenge(b"")
        else:
            answer = self._decoded(initial.encode("utf-8", "surrogateescape"))
        if answer is None:
            return AuthResult(success=False)
        parts = answer.split(b"\x00")
        if len(parts) != 3:
            self._reply("501 5.5.2 Can't split auth value")
            return AuthResult(success=False)
        return self._authenticate("PLAIN", LoginPassword(parts[1], parts[2]))

    async def _login(self, initial: str | None) -> AuthResult:
        if initial is None:
            login = await self._challenge(_LOGIN_USERNAME)
        else:
            login = self._decoded(initial.encode("utf-8", "surrogateescape"))
        if login is None:
            return AuthResult(success=False)
        password = await self._challenge(_LOGIN_PASSWORD)
        if password is None:
            return AuthResult(success=False)
        return self._authenticate("LOGIN", LoginPassword(login, password))

    async def _cram_md5(self, initial: str | None) -> AuthResult:
        """RFC 2195: the server sends a one-time challenge in the form of a message id, the
        client answers ``username SP hex-digest``; the handler checks the digest against
        the password it knows. Offered in capture only (submission keeps hashes)."""
        if initial is not None:  # the server speaks first: there is no initial response
            self._reply("501 5.5.2 CRAM-MD5 takes no initial response")
            return AuthResult(success=False)
        host = self.config.hostname
        challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{host}>".encode()
        answer = await self._challenge(challenge)
        if answer is None:
            return AuthResult(success=False)
        username, _, digest = answer.rpartition(b" ")
        if not username or not digest:
            self._reply("501 5.5.2 Expected: username SP digest")
            return AuthResult(success=False)
        return self._authenticate("CRAM-MD5", CramMd5(username, challenge, digest))

    async def _challenge(self, challenge: bytes) -> bytes | None:
        """``334`` with ``challenge``, then the client's answer decoded; None (answered
        501) for ``*`` (RFC 4954 §4: the client cancels) or an answer that is not base64."""
        self._write(b"334 " + base64.b64encode(challenge) + b"\r\n")
        answer = (await self._read_line()).strip()
        if answer == b"*":
            self._reply("501 5.7.0 Auth aborted")
            return None
        return self._decoded(answer)

    def _decoded(self, blob: bytes) -> bytes | None:
        if blob == b"=":  # RFC 4954 §4: an empty initial response
            return b""
        try:
            return base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            self._reply("501 5.5.2 Can't decode base64")
            return None

    def _authenticate(self, mechanism: str, data: Any) -> AuthResult:
        result: AuthResult = self.config.handler.authenticate(
            self, self.session, self.envelope, mechanism, data
        )
        return result

    def _client(self) -> str:
        peer = self.session.peer
        return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _after_keyword(arg: str | None, keyword: str) -> str | None:
    """``arg`` after ``keyword`` (``FROM:``, ``TO:``; any case), stripped; None without it."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :].strip()


def _unbalanced(path: str) -> bool:
    """A path opened with ``<`` and not closed, or closed and not opened (the RFC 5322
    parser would take ``<a@example.com`` as an address). A bare address without brackets
    is let through, as most servers do."""
    path = path.split(" ", 1)[0]
    return path.startswith("<") != path.endswith(">")


def _tls_info(ssl_object: Any) -> dict[str, Any] | None:
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return {"version": ssl_object.version(), "cipher": ssl_object.cipher()}


_COMMANDS: dict[str, _Command] = {
    "AUTH": SmtpConnection._auth,
    "BDAT": SmtpConnection._bdat_command,
    "DATA": SmtpConnection._data_command,
    "EHLO": SmtpConnection._ehlo,
    "EXPN": SmtpConnection._expn,
    "HELO": SmtpConnection._helo,
    "HELP": SmtpConnection._help,
    "MAIL": SmtpConnection._mail,
    "NOOP": SmtpConnection._noop,
    "QUIT": SmtpConnection._quit,
    "RCPT": SmtpConnection._rcpt,
    "RSET": SmtpConnection._rset,
    "STARTTLS": SmtpConnection._starttls,
    "VRFY": SmtpConnection._vrfy,
}
