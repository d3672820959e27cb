"""The SMTP protocol engine (RFC 5321) of mailgate's server: one :class:`SmtpConnection`
(an :class:`asyncio.Protocol`) per client, sharing one :class:`SmtpConfig` per listener.

Why not aiosmtpd's: under a new connection per message its per-session set-up
(``inspect.getmembers`` on every connection), its address parsing (a class defined per
call) and a timeout object per command and per reply were about 60% of the capture
server's CPU, and it read DATA a line at a time (docs/benchmarks.md).

The engine is in parts, by concern:

* :mod:`.smtp_engine` — :class:`~mailgate.ingest.smtp_engine.SmtpEngine`: bytes in, command
  lines run in order (eagerly: a task only when one has to wait), replies out, the idle
  and write timeouts, flow control;
* this module — the verbs, one small method each, and the table from verb to method;
  what a listener's connections share (:class:`SmtpConfig`) and report to
  (:class:`SmtpRecorder`, :class:`Throttle`);
* :mod:`.smtp_auth` — AUTH (RFC 4954) and its exchanges;
* :mod:`.smtp_syntax` — what a command line says: verb, path, ESMTP parameters;
* :mod:`.smtp_data` — a DATA block read as it arrives, in blocks, and unstuffed;
* :mod:`.smtp_session` — the values they share: ``Session``, ``Envelope``, ``Refusal``.

The replies are aiosmtpd 1.4's, word for word where a client or a test may read them,
with RFC 3463 codes where mailgate added them (552 5.3.4). Handlers keep aiosmtpd's hook
interface: ``handle_EHLO/MAIL/RCPT/DATA(server, session, envelope, ...)`` return the reply,
``authenticate(...)`` returns an :class:`~mailgate.ingest.smtp_auth.AuthResult`, and an
optional async ``verify`` checks credentials off the loop.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailgate.ingest.chaos import Chaos, Stage
from mailgate.ingest.chunking import ChunkedBody, bdat_args
from mailgate.ingest.smtp_auth import SmtpAuth
from mailgate.ingest.smtp_data import DataReader, Spool
from mailgate.ingest.smtp_session import (
    Networks,
    Refusal,
)
from mailgate.ingest.smtp_syntax import (
    after_keyword,
    is_xtext,
    mail_params,
    parse_path,
    path_params,
    split_command,
    unbalanced,
)

__all__ = ["SmtpConfig", "SmtpConnection", "SmtpRecorder"]

log = logging.getLogger(__name__)

#: lines that are no command (unknown verbs, bad syntax, empty lines) before the session
#: is ended with 421 (aiosmtpd ended it at the 5th unknown verb): a client that speaks
#: something else (HTTP to the SMTP port) is sent away, one with a typo or two is not.
#: 20 as Postfix's ``smtpd_hard_error_limit``, which counts every error reply; a known
#: verb refused (501, 503, 5xx of a hook) is not counted here
_MAX_BOGUS = 20


class SmtpRecorder(Protocol):
    """Where the server reports what it did (:class:`mailgate.metrics.Metrics`)."""

    def smtp_connected(self) -> None: ...
    def smtp_disconnected(self) -> None: ...
    def smtp_accepted(self, size: int) -> None: ...
    def smtp_refused(self, reason: str) -> None: ...
    def smtp_auth(self, mechanism: str, *, success: bool) -> None: ...


class Throttle(Protocol):
    """Failed AUTH per client address
    (:class:`mailgate.ingest.auth_throttle.SharedAuthThrottle`). ``blocked`` answers at
    once; ``admit`` may read the store (:class:`~mailgate.errors.StoreError` when it
    cannot: the attempt is refused for now); a failure is counted when ``failed`` or
    ``done`` returns."""

    def blocked(self, client: str) -> bool: ...
    async def failed(self, client: str) -> None: ...
    async def admit(self, client: str) -> bool: ...
    async def done(self, client: str, *, failed: bool) -> None: ...


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
    with it (None on an implicit-TLS listener). ``implicit_tls``: the listener speaks
    TLS from the first octet with it (RFC 8314 §3.3). ``cleartext_auth_from``: AUTH only over
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
    implicit_tls: ssl.SSLContext | None = None
    auth_required: bool = False
    cleartext_auth_from: Networks | None = None
    throttle: Throttle | None = None
    mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN")
    chaos: Chaos = field(default_factory=Chaos)
    spool: Spool | None = None  #: where messages past its threshold are written (tempfile)
    ident: str = "mailgate ESMTP"
    greeting: bytes = field(init=False)
    ehlo_hook: Hook | None = field(init=False)
    mail_hook: Hook | None = field(init=False)
    rcpt_hook: Hook | None = field(init=False)
    data_hook: Hook | None = field(init=False)
    verify: Hook | None = field(init=False)
    in_task: frozenset[str] = field(init=False)  #: verbs run in a task from the start

    def __post_init__(self) -> None:
        greeting = f"220 {self.hostname} {self.ident}\r\n".encode("ascii", "replace")
        object.__setattr__(self, "greeting", greeting)
        object.__setattr__(self, "in_task", frozenset(getattr(self.handler, "io_verbs", ())))
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


#: RFC 6531 §3.4: an address that is not ASCII needs MAIL's SMTPUTF8 (Postfix's words)
_UNDECLARED_UTF8 = "553 5.6.7 Must declare SMTPUTF8 to send Unicode address"

_Command = Callable[["SmtpConnection", "str | None"], Coroutine[Any, Any, None]]


class SmtpConnection(SmtpAuth):
    """One client's SMTP session. Handlers get it as their ``server`` argument.

    Its verbs are here, but AUTH (:class:`~mailgate.ingest.smtp_auth.SmtpAuth`); the engine
    running them, and all of the session's state, is
    :class:`~mailgate.ingest.smtp_engine.SmtpEngine`."""

    __slots__ = ()

    def _command(self, line: bytes) -> None:
        parts = split_command(line)
        if parts is None:
            self._no_command("500 Error: bad syntax")
            return
        verb, arg = parts
        method = _COMMANDS.get(verb)
        if method is None:
            self._no_command(f'500 Error: command "{verb[:32]}" not recognized')
            return
        if verb in self.config.in_task:
            self._started(self._loop.create_task(method(self, arg)))
        else:
            self._run(method(self, arg))

    def _no_command(self, reply: str) -> None:
        """Answer a line that is no command; at the ``_MAX_BOGUS``-th, 421 and close."""
        self._bogus += 1
        if self._bogus >= _MAX_BOGUS:
            self.say_goodbye(b"421 4.7.0 Too many unrecognized commands, closing")
        else:
            self._reply(reply)

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
        path = after_keyword(arg, "FROM:")
        if path is not None and unbalanced(path):
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
        if not address.isascii() and "SMTPUTF8" not in options:
            self._refuse(Refusal.BAD_ADDRESS, _UNDECLARED_UTF8)
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
        params = path_params(rest)
        if params is None:  # RFC 5321 §4.1.1.2: a space between
            self._reply(syntax)
            return None
        return address, params, syntax

    def _mail_params(self, options: list[str], syntax: str) -> str | None:
        """The refusal of MAIL's parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
        SMTPUTF8, RFC 4954 AUTH where AUTH is offered), or None."""
        params = mail_params(options)
        if params is None:
            return syntax
        body = params.pop("BODY", "7BIT")
        if body not in ("7BIT", "8BITMIME"):
            return "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        if params.pop("SMTPUTF8", True) is not True:
            return "501 Error: SMTPUTF8 takes no arguments"
        if "AUTH" in params and self.config.mechanisms:  # RFC 4954 §5: parsed, then dropped
            auth = params.pop("AUTH")
            if not isinstance(auth, str) or not is_xtext(auth):
                return syntax
        size = params.pop("SIZE", None)
        if size is not None:
            if not isinstance(size, str) or not (size.isascii() and size.isdigit()):
                return syntax
            limit = self.config.max_message_size
            if limit and int(size) > limit:
                return "552 5.3.4 Message size exceeds fixed maximum message size"
        if params:
            return "555 MAIL FROM parameters not recognized or not implemented"
        return None

    async def _rcpt(self, arg: str | None) -> None:
        path = after_keyword(arg, "TO:")
        if path is not None and unbalanced(path):
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
        if not address.isascii() and not envelope.smtp_utf8:
            self._refuse(Refusal.BAD_ADDRESS, _UNDECLARED_UTF8)
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
        self._data = reader = DataReader(self.config.max_message_size, self.config.spool)
        if self._buf:  # pipelined (RFC 2920 §3.1: DATA may be the last command of a group)
            pending = bytes(self._buf)
            self._buf.clear()
            end = reader.feed(pending)
            if end is not None:
                self._end_data(end)

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
            body = envelope.chunked = ChunkedBody(
                self.config.max_message_size, spool=self.config.spool
            )
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
        self._buf.clear()  # §4: pipelined commands after STARTTLS are not taken
        self._reply("220 Ready to start TLS")
        if await self._handshake(context):
            self._new_transaction()


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
