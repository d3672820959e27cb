"""Rows and records of the queue: how a message, an attempt and an event are stored and
read back. Pure mapping, no I/O; :mod:`mailgate.store.queue` runs the queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from mailgate.model import (
    Attachment,
    Attempt,
    FailureClass,
    Message,
    Outcome,
    Priority,
    RecipientResult,
    State,
)

__all__ = [
    "Enqueued",
    "Job",
    "MessageRecord",
    "attempt_from_row",
    "attempt_row",
    "job_from_row",
    "message_row",
    "record_from_row",
]


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: str
    duplicate: bool  #: the idempotency key was seen before; nothing was queued


@dataclass(frozen=True, slots=True)
class Job:
    """A leased message and the delivery state the dispatcher needs."""

    message: Message
    pending: tuple[str, ...]
    delivered: int
    attempt_count: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message as the API shows it."""

    id: str
    key: str | None
    account: str
    state: State
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None
    metadata: dict[str, Any]
    attempts: tuple[Attempt, ...] = ()
    wait_reason: str | None = None  #: why a due message is held (its account, a rate limit)
    tenant: str = ""
    source: str = ""  #: how it came in: rest, smtp, firestore:…


def message_row(m: Message, now: datetime) -> dict[str, Any]:
    """The ``messages`` row of a new message: queued, due at ``send_at`` or now."""
    return {
        "id": m.id,
        "tenant": m.tenant,
        "key": m.key,
        "account": m.account,
        "state": State.QUEUED,
        "priority": int(m.priority),
        "sender": m.sender,
        "to_addrs": list(m.to),
        "cc_addrs": list(m.cc),
        "bcc_addrs": list(m.bcc),
        "reply_to": m.reply_to,
        "subject": m.subject,
        "text_body": m.text,
        "html_body": m.html,
        "headers": dict(m.headers),
        "meta": dict(m.metadata),
        "message_id": m.message_id,
        "pending": list(m.envelope_recipients),
        "delivered": 0,
        "attempt_count": 0,
        "created_at": m.created_at,
        "updated_at": now,
        "send_at": m.send_at,
        "next_attempt_at": max(m.send_at, now) if m.send_at else now,
        "source": m.source,
        "raw": m.raw,
        "return_path": m.return_path,
    }


def job_from_row(row: RowMapping, files: tuple[Attachment, ...]) -> Job:
    message = Message(
        id=row["id"],
        tenant=row["tenant"],
        key=row["key"],
        account=row["account"],
        sender=row["sender"],
        to=tuple(row["to_addrs"]),
        cc=tuple(row["cc_addrs"]),
        bcc=tuple(row["bcc_addrs"]),
        reply_to=row["reply_to"],
        subject=row["subject"],
        text=row["text_body"],
        html=row["html_body"],
        headers=row["headers"],
        attachments=files,
        priority=Priority(row["priority"]),
        send_at=row["send_at"],
        metadata=row["meta"],
        message_id=row["message_id"],
        created_at=row["created_at"],
        source=row["source"],
        raw=row["raw"],
        return_path=row["return_path"],
    )
    return Job(message, tuple(row["pending"]), row["delivered"], row["attempt_count"])


def record_from_row(row: RowMapping) -> MessageRecord:
    return MessageRecord(
        id=row["id"],
        key=row["key"],
        account=row["account"],
        state=State(row["state"]),
        sender=row["sender"],
        to=tuple(row["to_addrs"]),
        cc=tuple(row["cc_addrs"]),
        bcc=tuple(row["bcc_addrs"]),
        subject=row["subject"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        metadata=row["meta"],
        wait_reason=row["wait_reason"],
        tenant=row["tenant"],
        source=row["source"],
    )


def attempt_row(a: Attempt) -> dict[str, Any]:
    return {
        "at": a.at,
        "transport": a.transport,
        "code": a.code,
        "enhanced_code": a.enhanced_code,
        "text": a.text,
        "duration_ms": a.duration_ms,
        "recipients": {
            k: {"status": v.status, "code": v.code, "text": v.text} for k, v in a.recipients.items()
        },
        "failure_class": a.failure_class,
        "counted": a.counted,
        "remote_id": a.remote_id,
        "account": a.account,
    }


def attempt_from_row(row: RowMapping) -> Attempt:
    recipients = {
        k: RecipientResult(Outcome(v["status"]), v["code"], v["text"])
        for k, v in row["recipients"].items()
    }
    return Attempt(
        row["at"],
        row["transport"],
        row["code"],
        row["enhanced_code"],
        row["text"],
        row["duration_ms"],
        recipients,
        failure_class=FailureClass(row["failure_class"]) if row["failure_class"] else None,
        counted=bool(row["counted"]),
        remote_id=row["remote_id"],
        account=row["account"],
    )
