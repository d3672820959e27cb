"""Opening one account's SMTP session: connect, EHLO, TLS as configured, AUTH.

Each step is taken explicitly (not by aiosmtplib's ``start_tls=None`` guessing),
so a failure says which step it was and the account's security rules hold (EHLO
refused by a server without extensions is followed by HELO):

* ``ssl``: implicit TLS from the first byte (RFC 8314 §3.3);
* ``starttls``: STARTTLS after EHLO is required (RFC 3207); a server that does
  not offer it is an account problem (class ``tls``), never sent in clear;
* ``none``: plain, upgraded when offered only if the account asks for
  ``opportunistic_tls`` (RFC 7435).

Credentials go only over TLS unless the account says ``auth_plaintext``.
"""

from __future__ import annotations

import aiosmtplib
from aiosmtplib import (
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailgate.deliver.outcomes import config_error
from mailgate.model import Account, FailureClass, SendResult, SmtpAuth, SmtpSecurity

__all__ = ["CLEARTEXT_REFUSED", "SessionSetup", "SetupRefused", "smtp_name"]

CLEARTEXT_REFUSED = (
    "refusing to send credentials without TLS"
    " (add ?auth_plaintext=true to the relay URL to allow it)"
)
NO_STARTTLS = "the server does not offer STARTTLS (RFC 3207), which this account requires"
_SCHEMES = {SmtpSecurity.NONE: "smtp", SmtpSecurity.STARTTLS: "smtp+starttls"}


class SetupRefused(Exception):
    """The session could not be set up because of the account's configuration."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result


def smtp_name(account: Account) -> str:
    """Where it goes, as a URL without credentials: safe for logs and attempt records."""
    scheme = _SCHEMES.get(account.smtp_security, "smtps")
    host = account.smtp_host or ""
    host = f"[{host}]" if ":" in host else host  # RFC 3986 §3.2.2
    return f"{scheme}://{host}:{account.smtp_port}"


class SessionSetup:
    """Opens sessions for one account; :meth:`connect` is the pool's factory."""

    def __init__(self, account: Account, *, timeout: float, local_hostname: str | None) -> None:
        self.account = account
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.name = smtp_name(account)

    @property
    def logs_in(self) -> bool:
        return self.account.smtp_auth is not SmtpAuth.NONE and bool(self.account.smtp_username)

    @property
    def verify_certificate(self) -> bool:
        """Checked always for ``ssl``/``starttls`` (unless ``verify_tls`` is off).

        Opportunistic STARTTLS only encrypts against eavesdroppers (RFC 7435, Postfix's
        ``smtp_tls_security_level = may``): a self-signed certificate must not stop mail
        that would otherwise go in clear. Once there are credentials to protect, the
        certificate is checked there too, so they go only to the real server.
        """
        a = self.account
        return a.verify_tls and (a.smtp_security is not SmtpSecurity.NONE or self.logs_in)

    async def connect(self) -> aiosmtplib.SMTP:
        a = self.account
        client = aiosmtplib.SMTP(
            hostname=a.smtp_host,
            port=a.smtp_port,
            timeout=self.timeout,
            use_tls=a.smtp_security is SmtpSecurity.SSL,
            start_tls=False,
            validate_certs=self.verify_certificate,
            local_hostname=self.local_hostname,
        )
        await client.connect()  # closes the client itself if it fails
        try:
            await _hello(client)
            await self._tls(client)
            if self.logs_in:
                await self._login(client)
        except BaseException:
            client.close()
            raise
        return client

    async def _tls(self, client: aiosmtplib.SMTP) -> None:
        security = self.account.smtp_security
        wanted = security is SmtpSecurity.STARTTLS or (
            security is SmtpSecurity.NONE and self.account.opportunistic_tls
        )
        if not wanted:
            return
        if not client.supports_extension("starttls"):
            if security is SmtpSecurity.STARTTLS:
                raise SetupRefused(config_error(None, NO_STARTTLS, FailureClass.TLS))
            return
        await client.starttls()
        await client.ehlo()  # RFC 3207 §4.2: forget what the server said before TLS

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        """AUTH (RFC 4954) with the account's mechanism, only over TLS unless allowed.

        Any refusal, 4xx or 5xx (``535 5.7.8`` bad credentials, ``530`` STARTTLS
        first, no AUTH offered), is a configuration error, as with Postfix's
        ``smtp_sasl_auth_soft_bounce``: retry, never fail the message for it.
        """
        a = self.account
        encrypted = client.get_transport_info("sslcontext") is not None
        if not encrypted and not a.auth_plaintext:
            raise SetupRefused(config_error(None, CLEARTEXT_REFUSED))
        if not client.supports_extension("auth"):
            text = "login failed: The SMTP AUTH extension is not supported by this server."
            raise SetupRefused(config_error(None, text))
        login = _mechanism(client, a.smtp_auth) == "login"
        method = client.auth_login if login else client.auth_plain
        try:
            await method(a.smtp_username or "", a.smtp_password or "")
        except (SMTPServerDisconnected, SMTPTimeoutError):
            raise  # the connection, not the login: an ordinary transient failure
        except SMTPResponseException as exc:
            raise SetupRefused(config_error(exc.code, exc.message)) from exc


async def _hello(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO where EHLO is refused for good: a server without service extensions
    answers EHLO with 500 or 502 (RFC 5321 §3.2) and must take HELO (§4.1.1.1), as
    smtplib and Postfix fall back. A 4yz (or a closed line) is no such answer."""
    try:
        await client.ehlo()
    except SMTPHeloError as exc:
        if not (500 <= exc.code < 600 and client.is_connected):
            raise
        await client.helo()


def _mechanism(client: aiosmtplib.SMTP, wanted: SmtpAuth) -> str:
    """The account's mechanism when the server offers it; else the other of PLAIN and
    LOGIN that it does offer (they carry the same credentials: RFC 4616, and LOGIN's
    two base64 prompts), as mail clients do; a relay URL names no mechanism at all."""
    offered = {m.lower() for m in client.server_auth_methods}
    first = "login" if wanted is SmtpAuth.LOGIN else "plain"
    for mechanism in (first, "plain", "login"):
        if mechanism in offered:
            return mechanism
    return first  # the server's answer to it says what is wrong
