"""Plain records of mailgate: messages, attempts and delivery outcomes.

Nothing here does I/O; every part of the pipeline passes these values around.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "Account",
    "AccountImap",
    "AccountLimits",
    "AccountTransport",
    "Attachment",
    "Attempt",
    "FailureClass",
    "Message",
    "Outcome",
    "Priority",
    "RecipientResult",
    "SendResult",
    "SmtpAuth",
    "SmtpSecurity",
    "State",
    "mailbox",
]


_PLAIN_ADDRESS = frozenset(' <>"(),;:\\')


@functools.lru_cache(maxsize=8192)
def mailbox(value: str) -> tuple[str, str]:
    """``(display name, address)`` of a stored mailbox (``addr`` or ``Name <addr>``).

    Every message names the same few senders and recipients again and again, at every
    step (routing, the envelope, the header fields): parsed once, remembered.
    """
    if _PLAIN_ADDRESS.isdisjoint(value):
        return "", value
    return parseaddr(value)


class State(StrEnum):
    """The life of a queued message: ``queued → sending → sent | deferred → … | failed``."""

    QUEUED = "queued"  #: waiting for its first (or a forced) attempt
    SENDING = "sending"  #: leased by a dispatcher; an attempt is under way
    SENT = "sent"  #: every recipient was accepted, or refused for good
    DEFERRED = "deferred"  #: a temporary failure; ``next_attempt_at`` says when it is tried again
    FAILED = "failed"  #: refused permanently, or retries gave up
    CANCELLED = "cancelled"  #: withdrawn by a client before it was sent


class Priority(IntEnum):
    """Lower values are leased first."""

    IMMEDIATE = 0  #: transactional mail a user is waiting for (password reset)
    HIGH = 1  #: receipts, notifications
    NORMAL = 2  #: the default
    LOW = 3  #: bulk and digests


class Outcome(StrEnum):
    """What a delivery attempt (or one recipient of it) came to."""

    SENT = "sent"  #: accepted by the next hop (2xx)
    DEFERRED = "deferred"  #: temporary failure (4xx, timeout, dropped connection): retry later
    FAILED = "failed"  #: permanent failure (5xx): do not retry


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes
    cid: str | None = None  #: Content-ID for inline use in HTML (``cid:…``)
    #: fetched at send time (``content`` is empty until then): http(s) only, SSRF-checked
    url: str | None = None
    #: ``volume:sub/path`` read at send time from a configured directory
    path: str | None = None

    @property
    def deferred(self) -> bool:
        """Whether the bytes come at send time (from ``url`` or ``path``), not from the queue."""
        return self.url is not None or self.path is not None


@dataclass(frozen=True, slots=True)
class Message:
    """A validated message as it is queued; built by ``ingest``, delivered by ``deliver``."""

    id: str
    sender: str  #: the From header, possibly with a display name
    to: tuple[str, ...]
    subject: str
    message_id: str  #: the RFC 5322 Message-ID, fixed at ingest so retries keep it
    created_at: datetime
    tenant: str = "default"
    key: str | None = None  #: the client's idempotency key (its ``id``)
    account: str = "default"
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: str | None = None
    text: str | None = None
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    priority: Priority = Priority.NORMAL
    send_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: where it came from, for its reports: "rest", "smtp" or "firestore:<document path>"
    source: str = "rest"
    #: SMTP submission: the message as the client sent it, sent as it is (the fields
    #: above describe it, they do not build it); None: built from the fields
    raw: bytes | None = None
    #: the envelope sender (MAIL FROM) when it is not the From address
    return_path: str | None = None

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        """Every RCPT TO address (bare), bcc included; duplicates removed, order kept."""
        seen: dict[str, None] = {}
        for value in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(mailbox(value)[1], None)
        return tuple(seen)


class FailureClass(StrEnum):
    """Why an attempt (or one recipient of it) did not go through; recorded on every attempt.

    Mostly from the RFC 3463 enhanced code (``class.subject.detail``): subject 1 is
    addressing, 2 the mailbox, 6 the content, 7 security or policy.
    """

    INVALID_RECIPIENT = "invalid_recipient"  #: x.1.x: no such user or domain
    MAILBOX_FULL = "mailbox_full"  #: x.2.2
    POLICY = "policy"  #: x.7.x (other than our own login): refused as spam, by policy
    THROTTLED = "throttled"  #: 421, 4.7.x rate, 450 4.2.1: slow down this account
    AUTH = "auth"  #: our own login was refused (535, 5.7.8, 530): an account problem
    NETWORK = "network"  #: refused, reset or dropped connection, DNS
    TIMEOUT = "timeout"  #: no reply in time
    TLS = "tls"  #: handshake or certificate failure: an account problem
    PROTOCOL = "protocol"  #: the server answered out of protocol (5.5.x, garbage)
    CONTENT = "content"  #: x.6.x, 552: the message itself (size, encoding)
    OTHER = "other"  #: none of the above


@dataclass(frozen=True, slots=True)
class RecipientResult:
    status: Outcome
    code: int | None
    text: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a transport returns for one attempt; failures are values, not exceptions."""

    status: Outcome
    code: int | None
    enhanced_code: str | None
    detail: str
    recipients: Mapping[str, RecipientResult] = field(default_factory=dict)
    #: The attempt failed on mailgate's side of the conversation, not the message's: the
    #: relay refused our credentials, or we refused to send them without TLS. Such an
    #: attempt is retried without using up the message's retry budget.
    config_error: bool = False
    failure_class: FailureClass | None = None  #: None when sent
    retry_after: float | None = None  #: seconds the server asked us to wait ("try again in")
    remote_id: str | None = None  #: the next hop's id for the message (Postmark MessageID)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at delivering a message, as recorded in the store."""

    at: datetime
    transport: str
    code: int | None
    enhanced_code: str | None
    text: str
    duration_ms: int
    recipients: Mapping[str, RecipientResult]
    failure_class: FailureClass | None = None
    counted: bool = True  #: False: waiting on our side (login, TLS, pacing) spent no try
    remote_id: str | None = None
    account: str | None = None  #: the account it went through (None: captured)


class AccountTransport(StrEnum):
    SMTP = "smtp"  #: the user's own SMTP server (submission with AUTH)
    POSTMARK = "postmark"  #: Postmark's HTTP API


class SmtpSecurity(StrEnum):
    SSL = "ssl"  #: RFC 8314 implicit TLS (port 465)
    STARTTLS = "starttls"  #: RFC 3207, required
    NONE = "none"  #: plain; opportunistic STARTTLS only when the account asks for it


class SmtpAuth(StrEnum):
    PLAIN = "plain"
    LOGIN = "login"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """Pacing and pool size for one account; ``None`` means no limit of that kind."""

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    pool_size: int = 3  #: most open connections (also the most concurrent sends)
    limit_behavior: str = "wait"  #: "wait" (hold over-limit mail) or "reject" (429 per item)
    #: this account's own retry numbers, by RetrySettings name (``{"max_attempts": 3}``)
    retry: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountImap:
    """An account's mailbox, stored for the coming inbound poller; nothing reads it yet."""

    host: str | None = None
    port: int | None = None
    security: SmtpSecurity = SmtpSecurity.SSL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    folder: str = "INBOX"
    poll_interval_sec: int = 120


@dataclass(frozen=True, slots=True)
class Account:
    """A sending identity. Secrets are plain here, in memory only: the store encrypts them
    and the API never returns them (``repr`` hides them too)."""

    id: str
    tenant: str
    transport: AccountTransport
    from_: tuple[str, ...] = ()  #: addresses or domains (``@example.com``/``example.com``)
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    smtp_auth: SmtpAuth = SmtpAuth.PLAIN
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    postmark_token: str | None = field(default=None, repr=False)
    is_outbound_enabled: bool = False
    limits: AccountLimits = field(default_factory=AccountLimits)
    verify_tls: bool = True
    #: on ``smtp_security=none``: upgrade with STARTTLS when the server offers it (RFC 7435)
    opportunistic_tls: bool = False
    #: allow AUTH on a connection that is not encrypted (the relay URL's ``auth_plaintext``)
    auth_plaintext: bool = False
    #: DKIM signing (RFC 6376), all three or none: the d= domain, the s= selector and the
    #: PEM private key (encrypted at rest like the passwords)
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: str | None = field(default=None, repr=False)
    version: int = 1  #: bumped on every change: cached transports are rebuilt
    imap: AccountImap = field(default_factory=AccountImap)
    connection_last_ok_at: datetime | None = None  #: health: the last test (or send) that worked
    connection_error: str | None = None  #: health: why the last test (or send) failed
    tested_at: datetime | None = None  #: the last passing connection test
    settings_changed_at: datetime | None = None  #: connection settings (host … password) changed
    created_at: datetime | None = None
    updated_at: datetime | None = None
    source: str = "api"  #: "api": stored; "config": the relay URL's ``default`` (read-only)

    @property
    def tested_since_change(self) -> bool:
        """Whether a test passed after the connection settings last changed: outbound may
        be enabled only then (a stored password could be wrong)."""
        if self.tested_at is None:
            return False
        return self.settings_changed_at is None or self.tested_at >= self.settings_changed_at

    def may_send_as(self, address: str) -> bool:
        """Whether ``address`` (bare) matches one of ``from_`` (an address or a domain)."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        for allowed in self.from_:
            allowed = allowed.lower()
            if allowed == address or allowed.lstrip("@") == domain:
                return True
        return False
