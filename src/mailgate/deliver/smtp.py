"""SMTP transport: aiosmtplib with a small pool of open connections per upstream.

The conversation is driven verb by verb (MAIL, RCPT each, DATA) so every
recipient gets its own result: a recipient refused at RCPT is recorded with
its code and text, and the message goes on to the others.
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
)

from mailgate.deliver.relay import RelayConfig, Security
from mailgate.deliver.transport import Envelope
from mailgate.model import Outcome, RecipientResult, SendResult
from mailgate.policy import classify, split_enhanced

__all__ = ["SmtpTransport"]

log = logging.getLogger(__name__)


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

    async def send(self, envelope: Envelope, content: bytes) -> SendResult:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            try:
                result, reusable = await self._send_on(client, envelope, content)
            except SMTPResponseException as exc:  # refused at connect, EHLO or AUTH
                return _reply_result(exc.code, exc.message)
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
            start_tls=r.security is Security.STARTTLS,
            validate_certs=r.verify_tls,
            local_hostname=self.local_hostname,
        )
        await client.connect()
        if client.is_ehlo_or_helo_needed:  # aiosmtplib defers EHLO on plain connections
            await client.ehlo()
        if r.username:
            await client.login(r.username, r.password or "")
        return client

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


def _all_refused(results: dict[str, RecipientResult]) -> SendResult:
    """Every RCPT refused: transient if any refusal was, so those get retried."""
    worst = next((r for r in results.values() if r.status is Outcome.DEFERRED), None)
    pick = worst or next(iter(results.values()))
    return _summary(pick.status, pick.code, pick.text, results)


def _no_reply(exc: BaseException) -> SendResult:
    """RFC 5321 §4.5.4.1: no answer at all is a transient failure."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return SendResult(Outcome.DEFERRED, None, None, detail, {})
