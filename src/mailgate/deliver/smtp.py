"""SMTP transport: one account's server, through a pool of open sessions (aiosmtplib).

The conversation is driven verb by verb (MAIL, RCPT each, DATA) so every
recipient gets its own result: a recipient refused at RCPT is recorded with
its code and text, and the message goes on to the others.

Whatever goes wrong while the session is set up (greeting, EHLO, STARTTLS, AUTH)
says nothing about the message, so it never fails one for good. A refused login
or an impossible TLS upgrade is the account's problem: it comes back as a
``config_error`` result (class ``auth`` or ``tls``), retried without counting.

A reply that refuses with a code that is no refusal (2yz or 3yz where another was
due) means the server and we are out of step: the attempt is deferred as a whole
and the connection closed (:func:`~mailgate.deliver.outcomes.out_of_step`).

A pooled session that turns out closed (dropped, or ``421`` at MAIL: RFC 5321
§3.8, the server is shutting the channel) is replaced by a new one within the
attempt, but only before MAIL was accepted: after that the server may hold the
message, and sending it again at once could deliver it twice.
"""

from __future__ import annotations

import logging

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
)

from mailgate.deliver.outcomes import (
    all_refused,
    no_reply,
    out_of_step,
    reply_result,
    setup_reply,
    summary,
)
from mailgate.deliver.pool import Pooled, PoolLimits, PoolStats, SmtpPool
from mailgate.deliver.smtp_session import CLEARTEXT_REFUSED, SessionSetup, SetupRefused
from mailgate.deliver.transport import Envelope, Outgoing
from mailgate.model import Account, Outcome, RecipientResult, SendResult
from mailgate.policy import classify

__all__ = ["CLEARTEXT_REFUSED", "SmtpTransport"]

log = logging.getLogger(__name__)


class _Stale(Exception):
    """The session ended before MAIL was accepted: nothing was sent, a new one may try."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result  #: what to report if no new session is tried


class _OutOfStep(Exception):
    """A reply that is no refusal where aiosmtplib expected another: see the module."""

    def __init__(self, exc: SMTPResponseException) -> None:
        super().__init__(exc.message)
        self.result = out_of_step(exc.code, exc.message)


class SmtpTransport:
    """Sends through one account's SMTP server; ``aclose()`` QUITs its pooled sessions."""

    def __init__(
        self,
        account: Account,
        *,
        limits: PoolLimits,
        timeout: float,
        local_hostname: str | None = None,
    ) -> None:
        self.account = account
        self.setup = SessionSetup(account, timeout=timeout, local_hostname=local_hostname)
        self.name = self.setup.name
        self.pool = SmtpPool(self.setup.connect, limits)

    @property
    def stats(self) -> PoolStats:
        return self.pool.stats

    async def send(self, outgoing: Outgoing) -> SendResult:
        # built before taking a connection: an unbuildable message holds none
        envelope, content = outgoing.envelope, await outgoing.mime()
        async with self.pool.slot():
            try:
                return await self._send(envelope, content)
            except SetupRefused as exc:  # our credentials or TLS policy
                return exc.result
            except _OutOfStep as exc:  # the connection was discarded: no reply can be trusted
                log.warning("%s answered out of sequence: %s", self.name, exc.result.detail)
                return exc.result
            except SMTPResponseException as exc:  # refused at connect, EHLO or STARTTLS
                return setup_reply(exc.code, exc.message)
            except (SMTPException, OSError) as exc:  # refused, timed out or dropped connection
                return no_reply(exc)

    async def _send(self, envelope: Envelope, content: bytes) -> SendResult:
        """On a pooled session, or on a new one if the pooled one went stale before MAIL."""
        conn = await self.pool.checkout()
        if conn.reused:
            try:
                return await self._on(conn, envelope, content)
            except _Stale:
                log.debug("pooled connection to %s went stale; reconnecting", self.name)
            conn = await self.pool.open()
        try:
            return await self._on(conn, envelope, content)
        except _Stale as exc:
            return exc.result

    async def _on(self, conn: Pooled, envelope: Envelope, content: bytes) -> SendResult:
        try:
            result = await self._transaction(conn.client, envelope, content)
        except BaseException:
            await self.pool.discard(conn)
            raise
        self.pool.checkin(conn)
        return result

    async def _transaction(
        self, client: aiosmtplib.SMTP, envelope: Envelope, content: bytes
    ) -> SendResult:
        options: list[str] = []
        encoding = "ascii"
        if not all(a.isascii() for a in (envelope.sender, *envelope.recipients)):
            if not client.supports_extension("smtputf8"):
                # RFC 6531 §3.2: without SMTPUTF8 a non-ASCII address cannot be sent at all
                text = "5.6.7 the upstream does not offer SMTPUTF8, needed for a non-ASCII address"
                return summary(Outcome.FAILED, None, text, {})
            options, encoding = ["SMTPUTF8"], "utf-8"
        refused = await self._mail(client, envelope.sender, options, encoding)
        if refused is not None:
            return refused
        return await self._recipients_and_data(client, envelope, content, encoding)

    async def _mail(
        self, client: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str
    ) -> SendResult | None:
        """MAIL FROM: None once accepted, else the refusal (raised as :class:`_Stale` when
        the session is gone, so a new one may be tried)."""
        try:
            await client.mail(sender, options=options, encoding=encoding)
        except SMTPServerDisconnected as exc:
            raise _Stale(no_reply(exc)) from exc
        except SMTPResponseException as exc:
            if not _refusal(exc.code):
                raise _OutOfStep(exc) from exc
            # 421 (RFC 5321 §3.8: closing the channel): aiosmtplib has closed it already
            if not client.is_connected:
                raise _Stale(reply_result(exc.code, exc.message)) from exc
            await _reset(client)
            return reply_result(exc.code, exc.message)
        return None

    async def _recipients_and_data(
        self, client: aiosmtplib.SMTP, envelope: Envelope, content: bytes, encoding: str
    ) -> SendResult:
        results: dict[str, RecipientResult] = {}
        for rcpt in envelope.recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
            except SMTPRecipientRefused as exc:
                if not _refusal(exc.code):
                    raise _OutOfStep(exc) from exc
                results[rcpt] = RecipientResult(classify(exc.code), exc.code, exc.message)
                if not client.is_connected:  # 421 (RFC 5321 §3.8): the channel is closed
                    # the others were not (or, accepted, not yet) sent: they wait on this reply
                    return summary(Outcome.DEFERRED, exc.code, exc.message, results)
        accepted = [r for r in envelope.recipients if r not in results]
        if not accepted:
            await _reset(client)
            return all_refused(results)
        try:
            reply = await client.data(content)
        except SMTPDataError as exc:
            if not _refusal(exc.code):
                raise _OutOfStep(exc) from exc
            status = classify(exc.code)
            for rcpt in accepted:
                results[rcpt] = RecipientResult(status, exc.code, exc.message)
            await _reset(client)
            return summary(status, exc.code, exc.message, results)
        for rcpt in accepted:
            results[rcpt] = RecipientResult(Outcome.SENT, reply.code, reply.message)
        return summary(Outcome.SENT, reply.code, reply.message, results)

    async def aclose(self) -> None:
        await self.pool.aclose()


def _refusal(code: int) -> bool:
    """4yz or 5yz (RFC 5321 §4.2.1); anything else in place of the reply aiosmtplib
    expected is out of step."""
    return 400 <= code < 600


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after an aborted transaction so the connection can be reused."""
    try:
        await client.rset()
    except (SMTPException, OSError):
        client.close()
