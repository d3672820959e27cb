"""Plain records of mailgate: messages, attempts and delivery outcomes.

Nothing here does I/O; every part of the pipeline passes these values around.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "Attachment",
    "Attempt",
    "Message",
    "Outcome",
    "Priority",
    "RecipientResult",
    "SendResult",
    "State",
]


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

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        """Every RCPT TO address (bare), bcc included; duplicates removed, order kept."""
        from email.utils import parseaddr

        seen: dict[str, None] = {}
        for value in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(parseaddr(value)[1], None)
        return tuple(seen)


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
