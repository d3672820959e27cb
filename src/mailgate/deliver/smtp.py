"""SMTP transport: aiosmtplib with a small pool of open connections per upstream.

The conversation is driven verb by verb (MAIL, RCPT each, DATA) so every
recipient gets its own result: a recipient refused at RCPT is recorded with
its code and text, and the message goes on to the others.

Whatever goes wrong while the session is set up (greeting, EHLO, STARTTLS, AUTH)
says nothing about the message, so it never fails one for good. A refused login
is our configuration's fault: it comes back as a ``config_error`` result, which
the dispatcher retries without counting it against the message.
"""

from __future__ import annotations

import asyncio
import logging

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailgate.deliver.relay import RelayConfig, Security
from mailgate.deliver.transport import Envelope, Outgoing
from mailgate.model import Outcome, RecipientResult, SendResult
from mailgate.policy import classify, split_enhanced

__all__ = ["SmtpTransport"]

log = logging.getLogger(__name__)

#: aiosmtplib's ``start_tls``: None upgrades when the server offers STARTTLS (RFC 3207)
_START_TLS: dict[Security, bool | None] = {
    Security.PLAIN: None,
    Security.STARTTLS: True,
    Security.TLS: False,
}
CLEARTEXT_REFUSED = (
    "refusing to send credentials without TLS"
    " (add ?auth_plaintext=true to the relay URL to allow it)"
)


class _SetupRefused(Exception):
    """The session could not be set up because of our configuration; carries the result."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result


class SmtpTransport:
    def __init__(
        self,
        relay: RelayConfig,
        *,
        pool_size: int,
        timeout: float,
        local_hostname: str | None = None,
    ) -> None:
        self.relay = relay
        self.name = relay.name
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, outgoing: Outgoing) -> SendResult:
        # built before taking a connection: an unbuildable message holds none
        envelope, content = outgoing.envelope, await outgoing.mime()
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            try:
                result, reusable = await self._send_on(client, envelope, content)
            except _SetupRefused as exc:  # our credentials or TLS policy
                return exc.result
            except SMTPResponseException as exc:  # refused at connect, EHLO or STARTTLS
                return _setup_reply(exc.code, exc.message)
            except (SMTPException, OSError) as exc:  # refused, timed out or dropped connection
                return _no_reply(exc)
            if reusable is not None:
                self._idle.append(reusable)
            return result

    async def _send_on(
        self, client: aiosmtplib.SMTP | None, envelope: Envelope, content: bytes
    ) -> tuple[SendResult, aiosmtplib.SMTP | None]:
        """Use a pooled connection, or a new one if it went stale before MAIL was answered."""
        if client is not None and client.is_connected:
            try:
                return await self._transaction(client, envelope, content)
            except SMTPServerDisconnected as exc:
                client.close()
                if getattr(exc, "mailgate_after_mail", False):
                    raise
                log.debug("pooled connection to %s went stale; reconnecting", self.name)
            except BaseException:
                client.close()
                raise
        client = await self._connect()
        try:
            return await self._transaction(client, envelope, content)
        except BaseException:
            client.close()
            raise

    async def _connect(self) -> aiosmtplib.SMTP:
        r = self.relay
        client = aiosmtplib.SMTP(
            hostname=r.host,
            port=r.port,
            timeout=self.timeout,
            use_tls=r.security is Security.TLS,
            start_tls=_START_TLS[r.security],
            validate_certs=r.verify_certificate,
            local_hostname=self.local_hostname,
        )
        await client.connect()  # closes the client itself if it fails
        try:
            if client.is_ehlo_or_helo_needed:  # aiosmtplib defers EHLO on plain connections
                await client.ehlo()
            if r.username:
                await self._login(client, r.username, r.password or "")
        except BaseException:
            client.close()
            raise
        return client

    async def _login(self, client: aiosmtplib.SMTP, username: str, password: str) -> None:
        """AUTH (RFC 4954), only over TLS unless the URL says ``auth_plaintext=true``.

        Any refusal, 4xx or 5xx (``535 5.7.8`` bad credentials, ``530`` STARTTLS
        first, no AUTH offered), is a configuration error, as with Postfix's
        ``smtp_sasl_auth_soft_bounce``: retry, never fail the message for it.
        """
        encrypted = client.get_transport_info("sslcontext") is not None
        if not encrypted and not self.relay.auth_plaintext:
            raise _SetupRefused(_config_error(None, CLEARTEXT_REFUSED))
        try:
            await client.login(username, password)
        except SMTPResponseException as exc:
            raise _SetupRefused(_config_error(exc.code, exc.message)) from exc
        except (SMTPServerDisconnected, SMTPTimeoutError):
            raise  # the connection, not the login: an ordinary transient failure
        except SMTPException as exc:  # e.g. the server offers no AUTH at all
            raise _SetupRefused(_config_error(None, f"login failed: {exc}")) from exc

    async def _transaction(
        self, client: aiosmtplib.SMTP, envelope: Envelope, content: bytes
    ) -> tuple[SendResult, aiosmtplib.SMTP | None]:
        options: list[str] = []
        encoding = "ascii"
        if _needs_utf8(envelope):
            if not client.supports_extension("smtputf8"):
                # RFC 6531 §3.2: without SMTPUTF8 a non-ASCII address cannot be sent at all
                text = "5.6.7 the upstream does not offer SMTPUTF8, needed for a non-ASCII address"
                return _summary(Outcome.FAILED, None, text, {}), client
            options, encoding = ["SMTPUTF8"], "utf-8"
        try:
            await client.mail(envelope.sender, options=options, encoding=encoding)
        except SMTPResponseException as exc:
            await _reset(client)
            return _reply_result(exc.code, exc.message), client
        try:
            return await self._recipients_and_data(client, envelope, content, encoding)
        except SMTPServerDisconnected as exc:
            exc.mailgate_after_mail = True  # type: ignore[attr-defined]
            raise

    async def _recipients_and_data(
        self, client: aiosmtplib.SMTP, envelope: Envelope, content: bytes, encoding: str
    ) -> tuple[SendResult, aiosmtplib.SMTP | None]:
        results: dict[str, RecipientResult] = {}
        for rcpt in envelope.recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
            except SMTPRecipientRefused as exc:
                results[rcpt] = RecipientResult(classify(exc.code), exc.code, exc.message)
        accepted = [r for r in envelope.recipients if r not in results]
        if not accepted:
            await _reset(client)
            return _all_refused(results), client
        try:
            reply = await client.data(content)
        except SMTPDataError as exc:
            status = classify(exc.code)
            for rcpt in accepted:
                results[rcpt] = RecipientResult(status, exc.code, exc.message)
            await _reset(client)
            return _summary(status, exc.code, exc.message, results), client
        for rcpt in accepted:
            results[rcpt] = RecipientResult(Outcome.SENT, reply.code, reply.message)
        return _summary(Outcome.SENT, reply.code, reply.message, results), client

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (SMTPException, OSError):
                client.close()


def _needs_utf8(envelope: Envelope) -> bool:
    return not all(a.isascii() for a in (envelope.sender, *envelope.recipients))


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after an aborted transaction so the connection can be reused."""
    try:
        await client.rset()
    except (SMTPException, OSError):
        client.close()


def _summary(
    status: Outcome, code: int | None, text: str, recipients: dict[str, RecipientResult]
) -> SendResult:
    enhanced, _ = split_enhanced(text)
    return SendResult(status, code, enhanced, text, recipients)


def _reply_result(code: int, text: str) -> SendResult:
    return _summary(classify(code), code, text, {})


def _setup_reply(code: int, text: str) -> SendResult:
    """A reply while setting up the session (greeting, EHLO, STARTTLS): never final.

    It is about the server, not the message; as Postfix's ``smtp_skip_5xx_greeting``
    does, even a 5xx here defers (RFC 5321 §3.1 lets a server answer 554 at the
    greeting while it refuses service for now). It still counts, so a relay that
    never comes back makes messages give up after ``max_age``.
    """
    return _summary(Outcome.DEFERRED, code, text, {})


def _config_error(code: int | None, text: str) -> SendResult:
    enhanced, _ = split_enhanced(text)
    return SendResult(Outcome.DEFERRED, code, enhanced, text, {}, config_error=True)


def _all_refused(results: dict[str, RecipientResult]) -> SendResult:
    """Every RCPT refused: transient if any refusal was, so those get retried."""
    worst = next((r for r in results.values() if r.status is Outcome.DEFERRED), None)
    pick = worst or next(iter(results.values()))
    return _summary(pick.status, pick.code, pick.text, results)


def _no_reply(exc: BaseException) -> SendResult:
    """RFC 5321 §4.5.4.1: no answer at all is a transient failure."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return SendResult(Outcome.DEFERRED, None, None, detail, {})
