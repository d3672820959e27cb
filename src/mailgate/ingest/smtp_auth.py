"""SMTP AUTH (RFC 4954) on the server's side: PLAIN (RFC 4616), LOGIN and CRAM-MD5
(RFC 2195) exchanges, and what they hand the handler's ``authenticate`` hook
(:class:`LoginPassword`, :class:`CramMd5`) and what it answers (:class:`AuthResult`).

:class:`SmtpAuth` is the AUTH verb of :class:`~mailgate.ingest.smtp_protocol.SmtpConnection`,
kept apart because its exchange is a dialogue of its own: challenges (``334``) and answers
read from the client between them, a throttle of failed attempts per client address, and an
optional async ``verify`` off the loop (submission's password hashes). The replies are
aiosmtpd 1.4's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from mailgate.errors import StoreError
from mailgate.ingest.chaos import Stage
from mailgate.ingest.smtp_engine import TOO_LONG, SmtpEngine
from mailgate.ingest.smtp_session import Refusal

if TYPE_CHECKING:
    from mailgate.ingest.smtp_protocol import Throttle

__all__ = ["AuthResult", "CramMd5", "LoginPassword", "SmtpAuth"]

log = logging.getLogger(__name__)

_CODE_SUCCESS = "235 2.7.0 Authentication successful"
_CODE_INVALID = "535 5.7.8 Authentication credentials invalid"
_LOGIN_USERNAME = b"User Name\x00"  # aiosmtpd's challenges
_LOGIN_PASSWORD = b"Password\x00"


class LoginPassword(NamedTuple):
    """The credentials of AUTH PLAIN or LOGIN, as the client sent them; ``authzid`` is
    PLAIN's authorization identity (RFC 4616 §2), whom the client asks to act as."""

    login: bytes
    password: bytes
    authzid: bytes = b""

    @property
    def as_itself(self) -> bool:
        """No authorization identity, or its own: no one here may act as another user."""
        return not self.authzid or self.authzid == self.login


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


class SmtpAuth(SmtpEngine):
    """The AUTH command (RFC 4954) of a connection: :meth:`_auth` and its exchanges."""

    __slots__ = ()

    async def _auth(self, arg: str | None) -> None:
        throttle = self.config.throttle
        if throttle is not None and throttle.blocked(self._client()):
            self._throttled()
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

    def _throttled(self) -> None:
        self.config.recorder.smtp_refused(Refusal.AUTH_THROTTLED)
        self.say_goodbye(b"421 4.7.0 Too many failed authentication attempts, try later")

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
        verify, throttle = self.config.verify, self.config.throttle
        client = self._client()
        if result.success and verify is not None:
            if throttle is not None and not await self._admitted(throttle, client):
                return AuthResult(success=False)
            identity, failed = None, False
            try:
                identity = await verify(result.auth_data)
                failed = identity is None
            except asyncio.CancelledError:
                # the client left during the check: its guess counts all the same, or
                # leaving at once would make guesses free (each still costs a hash)
                failed = True
                raise
            except StoreError as exc:  # the users unreadable: no verdict, no failure
                self._unavailable(client, "the SMTP users could not be read", exc)
                return AuthResult(success=False)
            finally:  # (a check that broke off, the store down, is no failed login)
                if throttle is not None:  # in the store before the client hears 535
                    await throttle.done(client, failed=failed)
            result = (
                AuthResult(success=False, handled=False)
                if identity is None
                else AuthResult(success=True, auth_data=identity)
            )
        elif not result.success and throttle is not None:
            await throttle.failed(client)
        self.config.recorder.smtp_auth(mechanism, success=result.success)
        return result

    async def _admitted(self, throttle: Throttle, client: str) -> bool:
        """Whether the client's password may be checked now (:meth:`Throttle.admit`);
        else it has been answered: 421 when the address is blocked (while the client
        answered, or while it waited, or in another process), and 454 (RFC 4954 §6:
        temporary authentication failure) when the store cannot say how many failures
        the address has: a guess the limit cannot vouch for is not checked."""
        try:
            if await throttle.admit(client):
                return True
        except StoreError as exc:
            self._unavailable(client, "its failed attempts could not be read", exc)
            return False
        self._throttled()
        return False

    def _unavailable(self, client: str, what: str, error: StoreError) -> None:
        """454 (RFC 4954 §6: temporary authentication failure): the store cannot say."""
        log.warning("SMTP AUTH from %s answered 454: %s: %s", client, what, error)
        self.config.recorder.smtp_refused(Refusal.STORE_UNAVAILABLE)
        self._reply("454 4.7.0 Temporary authentication failure, try again later")

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
        return self._authenticate("PLAIN", LoginPassword(parts[1], parts[2], parts[0]))

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
        501) for ``*`` (RFC 4954 §4: the client cancels) or an answer that is not base64,
        and (answered 500) for one too long to read."""
        self._write(b"334 " + base64.b64encode(challenge) + b"\r\n")
        answer = await self._read_line()
        if answer is TOO_LONG:  # RFC 4954 §4: the exchange ends with the command
            self._reply("500 5.5.6 Authentication Exchange line is too long")
            return None
        answer = answer.strip()
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
