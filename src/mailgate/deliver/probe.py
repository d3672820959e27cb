"""The account test: log in the way delivery would, send nothing, say which step failed.

SMTP: connect (implicit TLS for ``ssl``, RFC 8314 §3), EHLO (RFC 5321 §4.1.1.1),
STARTTLS for ``starttls`` (RFC 3207; EHLO again on the new channel), AUTH (RFC 4954),
NOOP (RFC 5321 §4.1.1.9), QUIT. Postmark: ``GET /server`` with the server token —
200 means the token works, 401 that it does not.

Every step is a value (:class:`ProbeStep`); a failure carries the server's reply or
the network error, never the credentials (aiosmtplib's errors hold replies only).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiosmtplib

from mailgate.model import Account, AccountTransport, SmtpAuth, SmtpSecurity

if TYPE_CHECKING:  # imported by a Postmark probe: a capture server makes none
    import httpx

__all__ = ["ProbeReport", "ProbeStep", "probe"]


@dataclass(frozen=True, slots=True)
class ProbeStep:
    name: str  #: connect, tls, ehlo, auth, noop, quit (or auth for a provider)
    ok: bool
    reply: str | None = None  #: the server's reply (``535 5.7.8 …``) or the error, on failure
    #: seconds the step took (the admin UI shows it); None where it was not a round trip
    elapsed: float | None = None
    #: the server's reply on success (``250 2.0.0 OK``), first line; None where there is none
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeReport:
    steps: list[ProbeStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def error(self) -> str | None:
        """``step: reply`` of the first failed step (the account's ``connection_error``)."""
        for step in self.steps:
            if not step.ok:
                return f"{step.name}: {step.reply}"
        return None


async def probe(
    account: Account,
    *,
    reply_timeout: float = 30.0,
    local_hostname: str | None = None,
    postmark_url: str = "https://api.postmarkapp.com",
) -> ProbeReport:
    """Test ``account``'s connection settings against its real server."""
    if account.transport is AccountTransport.POSTMARK:
        if not account.postmark_token:
            return ProbeReport([ProbeStep("auth", False, "no postmark_token is set")])
        return await _postmark(account, postmark_url, reply_timeout)
    if not account.smtp_host:
        return ProbeReport([ProbeStep("connect", False, "no smtp_host is set")])
    return await _Smtp(account, reply_timeout, local_hostname).run()


async def _postmark(account: Account, base_url: str, reply_timeout: float) -> ProbeReport:
    headers = {
        "Accept": "application/json",
        "X-Postmark-Server-Token": account.postmark_token or "",
    }
    import httpx

    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=reply_timeout) as client:
            response = await client.get("/server", headers=headers)
    except httpx.HTTPError as exc:
        return ProbeReport([ProbeStep("connect", False, _describe(exc))])
    connect = ProbeStep("connect", True)
    if response.status_code == 200:
        return ProbeReport([connect, ProbeStep("auth", True)])
    detail = _postmark_message(response)
    return ProbeReport([connect, ProbeStep("auth", False, f"{response.status_code} {detail}")])


def _postmark_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    message = body.get("Message") if isinstance(body, dict) else None
    return str(message) if message else response.reason_phrase


class _Smtp:
    """One probe session: each method is one step and returns whether to go on."""

    def __init__(self, account: Account, timeout: float, local_hostname: str | None) -> None:
        self.account = account
        self.steps: list[ProbeStep] = []
        self.client = aiosmtplib.SMTP(
            hostname=account.smtp_host,
            port=account.smtp_port,
            timeout=timeout,
            local_hostname=local_hostname,
            use_tls=account.smtp_security is SmtpSecurity.SSL,
            start_tls=False,  # STARTTLS is its own step below
            validate_certs=account.verify_tls,
        )

    async def run(self) -> ProbeReport:
        try:
            for step in (self._connect, self._ehlo, self._starttls, self._auth, self._noop):
                if not await step():
                    return ProbeReport(self.steps)
            await self._step("quit", self.client.quit())
            return ProbeReport(self.steps)
        finally:
            self.client.close()

    async def _step(self, name: str, call: Awaitable[object]) -> bool:
        """Run one step, timed; a refusal or an error is recorded with the reply."""
        started = time.monotonic()
        try:
            result = await call
        except aiosmtplib.SMTPResponseException as exc:
            took = time.monotonic() - started
            self.steps.append(ProbeStep(name, False, f"{exc.code} {exc.message}", took))
            return False
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            took = time.monotonic() - started
            self.steps.append(ProbeStep(_tls_or(name, exc), False, _describe(exc), took))
            return False
        took = time.monotonic() - started
        self.steps.append(ProbeStep(name, True, None, took, _first_line(result)))
        return True

    async def _connect(self) -> bool:
        """Connect (and, for ``ssl``, the TLS handshake: RFC 8314 implicit TLS)."""
        if not await self._step("connect", self.client.connect()):
            return False
        if self.account.smtp_security is SmtpSecurity.SSL:
            self.steps.append(ProbeStep("tls", True))
        return True

    async def _ehlo(self) -> bool:
        return await self._step("ehlo", self.client.ehlo())

    async def _starttls(self) -> bool:
        """RFC 3207: upgrade, then EHLO again (the server forgets what it said before)."""
        if self.account.smtp_security is not SmtpSecurity.STARTTLS:
            return True
        if not self.client.supports_extension("starttls"):
            self.steps.append(ProbeStep("tls", False, "the server does not offer STARTTLS"))
            return False
        return await self._step("tls", self.client.starttls()) and await self._ehlo()

    async def _auth(self) -> bool:
        a = self.account
        if a.smtp_auth is SmtpAuth.NONE:
            return True
        if a.smtp_username is None:
            self.steps.append(ProbeStep("auth", False, "no smtp_username is set"))
            return False
        if a.smtp_auth is SmtpAuth.LOGIN:
            login = self.client.auth_login(a.smtp_username, a.smtp_password or "")
        else:
            login = self.client.auth_plain(a.smtp_username, a.smtp_password or "")
        return await self._step("auth", login)

    async def _noop(self) -> bool:
        return await self._step("noop", self.client.noop())


def _first_line(result: object) -> str | None:
    """``code text`` of a reply's first line (EHLO's extension list is left out)."""
    if not isinstance(result, aiosmtplib.SMTPResponse):
        return None
    first = result.message.partition("\n")[0]
    return f"{result.code} {first}"[:200]


def _tls_or(name: str, exc: BaseException) -> str:
    """``tls`` when a connect step failed in the TLS handshake (bad certificate…)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return name


def _describe(exc: BaseException) -> str:
    """A network error as text: its class and message (no credentials are in either)."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
