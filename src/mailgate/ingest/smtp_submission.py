"""SMTP submission (``smtp.mode = submission``): applications that speak only SMTP hand
their mail to the gateway, which queues it and delivers it like REST mail.

The session rules (RFC 6409, as Postfix's submission service applies them):

* AUTH first: MAIL before it is ``530 5.7.0`` (the protocol's ``auth_required``), and
  AUTH is offered only over TLS unless the client is on loopback (the server's session).
* The user's ``senders`` bound MAIL FROM (``553 5.7.1``) and the From: header
  (``550 5.7.1``): an application can send only as itself.
* A recipient is an address REST would take (``553 5.1.3`` otherwise): no bare
  ``<postmaster>`` or ``<user>`` that a relay further on completes with its own domain.
* DATA with a bare LF or CR is refused (``550 5.5.2``, as Postfix's
  ``smtpd_forbid_bare_newline``): a relay further on that ends DATA at ``LF.LF`` could
  otherwise be handed a second, smuggled message. So is one with a NUL (``550 5.6.0``):
  text, even 8-bit (RFC 6152), has none, and a relay further on may cut it there.
* The message is kept as sent, but for what a submission server adds (RFC 6409 §8): a
  ``Received:`` field on top, ``Message-ID:`` and ``Date:`` if missing, and no ``Bcc:``
  field (its recipients are in the envelope). It is committed to the queue before the
  ``250``, which names its id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from datetime import datetime
from email.utils import format_datetime, make_msgid

from mailgate.clock import Clock
from mailgate.errors import InvalidMessage, StoreError
from mailgate.ids import new_id
from mailgate.ingest.addresses import address_problem, parse_address_list
from mailgate.ingest.smtp import EnvelopeHooks
from mailgate.ingest.smtp_auth import AuthResult, LoginPassword
from mailgate.ingest.smtp_data import line_endings
from mailgate.ingest.smtp_protocol import SmtpConnection
from mailgate.ingest.smtp_session import Envelope, Session
from mailgate.ingest.submission import Submissions
from mailgate.mime import parse_message
from mailgate.mime.decode import decode_8bit
from mailgate.mime.entity import read_entity
from mailgate.mime.headers import without_fields
from mailgate.model import Message, mailbox
from mailgate.services.smtp_users import SmtpUsersService, may_send_as
from mailgate.store.smtp_users import SmtpUser

__all__ = ["SubmissionHandler", "prepare_submitted"]

log = logging.getLogger(__name__)

_MAX_ADDRESS = 998  #: an address list longer than a header line cannot be sent anyway


class SubmissionHandler(EnvelopeHooks):
    """The hooks of a submission session."""

    io_verbs = frozenset({"AUTH", "MAIL"})  #: the users are read from the store

    def __init__(
        self,
        users: SmtpUsersService,
        submissions: Submissions,
        clock: Clock,
        *,
        hostname: str,
        max_recipients: int,
    ) -> None:
        self.users = users
        self.submissions = submissions
        self.clock = clock
        self.hostname = hostname
        self.max_recipients = max_recipients

    def authenticate(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        data: object,
    ) -> AuthResult:
        """Hand the credentials on: :meth:`verify` checks them, off the event loop."""
        return AuthResult(success=isinstance(data, LoginPassword), auth_data=data)

    async def verify(self, credentials: object) -> SmtpUser | None:
        """The SMTP user of AUTH's credentials (what the session keeps), or None; raises
        :class:`~mailgate.errors.StoreError` when the users cannot be read (the client
        hears 454 and no failure is counted: a store down is no wrong password)."""
        if not isinstance(credentials, LoginPassword) or not credentials.as_itself:
            return None
        login, password = (_text(credentials.login), _text(credentials.password))
        if not login or len(login) > 255:
            return None
        return await self.users.authenticate(login, password)

    async def handle_MAIL(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        user = session.auth_data
        if not isinstance(user, SmtpUser):  # the protocol answered 530 before this
            return "530 5.7.0 Authentication required"
        try:
            current = await self.users.current(user)
        except StoreError:
            log.warning("SMTP MAIL from %s could not read the users", user.username)
            return "451 4.3.0 Could not read the SMTP users, try again later"
        if current is None:  # removed, or its password changed: log in again
            session.authenticated, session.auth_data = False, None
            return f"530 5.7.0 Authentication required: {user.username} was removed or changed"
        session.auth_data = user = current  # its senders and account as they are now
        if not address:
            return "553 5.7.1 Submission needs a sender address, not <>"
        if not may_send_as(user, address):
            return f"553 5.7.1 <{address}>: not a sender {user.username} may use"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SmtpConnection,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        """A recipient is checked as a REST one is: ``<postmaster>`` or ``<a>`` relayed
        on would be completed by the upstream with a domain of its own, and a malformed
        one refused by it only after the message was accepted here."""
        problem = address_problem(address)
        if problem is not None:
            return f"553 5.1.3 <{address}>: not a valid recipient address: {problem}"
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(
        self, server: SmtpConnection, session: Session, envelope: Envelope
    ) -> str:
        user = session.auth_data
        if not isinstance(user, SmtpUser):
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or b""
        crlf, lf, cr = envelope.line_endings or line_endings(raw)  # (a big one's counted)
        if lf != crlf or cr != crlf:
            return "550 5.5.2 Message refused: bare LF or CR in DATA (lines end in CRLF)"
        if b"\0" in raw:  # RFC 5322 §2.3, RFC 6152: only BINARYMIME (not offered) has NUL
            return "550 5.6.0 Message refused: a NUL octet in DATA (text only)"
        now = self.clock.now()
        message_id = new_id()
        try:
            message = await asyncio.to_thread(
                self._message, raw, user, envelope, session, message_id, now
            )
        except _Refused as exc:
            return str(exc)
        try:
            refusal = await self.submissions.queue_one(message)
        except StoreError:
            log.exception("could not queue a message submitted by %s", user.username)
            return "451 4.3.0 Could not queue the message, try again later"
        if refusal is not None:
            return f"451 4.7.1 {refusal}"
        log.info(
            "%s queued from SMTP user %s to %d recipient(s)",
            message.id,
            user.username,
            len(message.to),
        )
        return f"250 2.0.0 OK: queued as {message.id}"

    def _message(
        self,
        raw: bytes,
        user: SmtpUser,
        envelope: Envelope,
        session: Session,
        message_id: str,
        now: datetime,
    ) -> Message:
        """The queued message, or :class:`_Refused` with the reply (in a worker thread:
        parsing is CPU work proportional to the message)."""
        parsed = parse_message(raw)
        # Every field as it is in the message, not decoded: the parser keeps the first
        # 1,000 (a second From: after them went unchecked, and out), and an encoded word
        # is display text only (decoded first, "=?utf-8?q?alice=40example.com_(?=
        # <evil@…>" passed for alice@example.com).
        fields = read_entity(raw, keep=sys.maxsize).fields
        from_values = _as_sent(fields, "from")
        if len(from_values) != 1:
            raise _Refused("550 5.6.0 Message refused: it needs exactly one From: field")
        try:
            senders = parse_address_list("From", from_values[0], limit=_MAX_ADDRESS)
        except InvalidMessage as exc:
            raise _Refused(f"550 5.6.0 Message refused: {exc}") from None
        for sender in senders:
            address = mailbox(sender)[1]
            if not may_send_as(user, address):
                raise _Refused(
                    f"550 5.7.1 Message refused: From: {address} is not a sender"
                    f" {user.username} may use"
                )
        # A blank Message-ID: is none at all (RFC 5322 §3.6.4 needs an id): replaced
        header_id = [v.strip() for v in _as_sent(fields, "message-id") if v.strip()]
        added_id = None if header_id else make_msgid(domain=self.hostname)
        stamp = _received(session, self.hostname, message_id, now)
        raw = prepare_submitted(raw, stamp, message_id=added_id, date=now)
        return Message(
            id=message_id,
            sender=(_values(parsed.headers, "From") or from_values)[0],  # shown decoded
            to=tuple(envelope.rcpt_tos),
            subject=parsed.subject,
            message_id=header_id[0] if header_id else added_id or "",
            created_at=now,
            tenant=user.tenant,
            account=user.account,
            metadata={"smtp_user": user.username},
            source="smtp",
            raw=raw,
            return_path=envelope.mail_from,
        )


class _Refused(Exception):
    """The reply that refuses a message (its str)."""


def prepare_submitted(
    raw: bytes, received: str, *, message_id: str | None, date: datetime | None
) -> bytes:
    """``raw`` as the submission server passes it on: ``received`` on top, then a
    ``Message-ID:`` (``message_id`` given: it was missing or blank, and a blank one is
    removed) and a ``Date:`` if there is none; the header's ``Bcc:`` fields removed. The
    body is left byte for byte."""
    kept, body, names = without_fields(
        raw, {b"bcc", b"message-id"} if message_id is not None else {b"bcc"}
    )
    added = [received.encode("utf-8")]
    if message_id is not None:
        added.append(f"Message-ID: {message_id}".encode("ascii"))
    if date is not None and b"date" not in names:
        added.append(f"Date: {format_datetime(date)}".encode("ascii"))
    return b"".join(line + b"\r\n" for line in added) + kept + body


def _received(session: Session, hostname: str, message_id: str, now: datetime) -> str:
    """RFC 5321 §4.4 trace field; ``ESMTPSA``/``ESMTPA`` as RFC 3848 names them."""
    peer = session.peer[0] if isinstance(session.peer, tuple) and session.peer else "unknown"
    helo = re.sub(r"[^!-~]", "?", session.host_name or "unknown")[:255]
    protocol = "ESMTPSA" if session.ssl else "ESMTPA"
    return (
        f"Received: from {helo} ([{peer}])\r\n\tby {hostname} (mailgate) with {protocol}"
        f" id {message_id};\r\n\t{format_datetime(now)}"
    )


def _as_sent(fields: list[tuple[str, str]], name: str) -> list[str]:
    """The values of the fields ``name`` (lower case), unfolded, 8-bit bytes read as
    UTF-8 (else latin-1), encoded words left as they are."""
    return [_FOLD.sub("", decode_8bit(v)) for n, v in fields if n.lower() == name]


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _values(headers: dict[str, str | list[str]], name: str) -> list[str]:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return [value] if isinstance(value, str) else list(value)
    return []


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""
