"""Submissions: validate message JSON (DESIGN §3) and queue it.

REST, SMTP submission and the Firestore watcher all end in :meth:`Submissions.submit`,
so every path validates the same way and commits before it acknowledges.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mailgate.clock import Clock
from mailgate.errors import InvalidMessage
from mailgate.ids import new_id
from mailgate.ingest.validation import check_header_name, check_header_value, normalize_address
from mailgate.model import Attachment, Message, Priority
from mailgate.settings import LimitSettings
from mailgate.store import QueueStore

__all__ = ["MessageIn", "Rejected", "SubmissionReport", "Submissions", "parse_message_json"]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = "application/octet-stream"
    content: str | None = Field(None, description="base64")
    url: str | None = Field(None, description="not supported yet")
    cid: str | None = None


class MessageIn(BaseModel):
    """A message as clients submit it; ``id`` is the client's idempotency key."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str | None = Field(None, min_length=1, max_length=255)
    account: str = "default"
    from_: str | None = Field(None, alias="from")
    to: str | list[str]
    cc: list[str] = []
    bcc: list[str] = []
    reply_to: str | None = None
    subject: str
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = {}
    attachments: list[AttachmentIn] = []
    priority: Literal["immediate", "high", "normal", "low"] = "normal"
    send_at: AwareDatetime | None = None
    metadata: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    id: str | None
    reason: str


@dataclass(slots=True)
class SubmissionReport:
    ids: list[str] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  #: indexes whose key was already queued
    rejected: list[Rejected] = field(default_factory=list)


def parse_message_json(
    item: object, *, tenant: str, default_from: str, limits: LimitSettings, now: datetime
) -> Message:
    """Validate one submitted message; :class:`InvalidMessage` says what is wrong."""
    try:
        data = MessageIn.model_validate(item)
    except ValidationError as exc:
        raise InvalidMessage(_pydantic_reason(exc)) from None
    if data.account != "default":
        # named SMTP accounts are not configurable yet: refuse rather than send another way
        raise InvalidMessage(f"account: unknown account {data.account!r} (only 'default' exists)")
    if data.text is None and data.html is None:
        raise InvalidMessage("text or html is required")
    to = [data.to] if isinstance(data.to, str) else data.to
    if not to:
        raise InvalidMessage("to: at least one recipient is required")
    sender = normalize_address("from", data.from_ or default_from)
    attachments = tuple(_attachment(i, a) for i, a in enumerate(data.attachments))
    message = Message(
        id=new_id(),
        tenant=tenant,
        key=data.id,
        account=data.account,
        sender=sender,
        to=tuple(normalize_address("to", a) for a in to),
        cc=tuple(normalize_address("cc", a) for a in data.cc),
        bcc=tuple(normalize_address("bcc", a) for a in data.bcc),
        reply_to=normalize_address("reply_to", data.reply_to) if data.reply_to else None,
        subject=check_header_value("subject", data.subject),
        text=data.text,
        html=data.html,
        headers={
            check_header_name(k): check_header_value(f"headers.{k}", v)
            for k, v in data.headers.items()
        },
        attachments=attachments,
        priority=Priority[data.priority.upper()],
        send_at=data.send_at.astimezone(UTC) if data.send_at else None,
        metadata=data.metadata,
        message_id=f"<{new_id()}@{_domain(sender)}>",
        created_at=now,
    )
    _check_limits(message, limits)
    return message


def _pydantic_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg'].lower()}")
    return "; ".join(parts)


def _attachment(index: int, att: AttachmentIn) -> Attachment:
    where = f"attachments.{index}"
    check_header_value(f"{where}.filename", att.filename)
    if att.url is not None:
        raise InvalidMessage(f"{where}: attachments by url are not supported yet; send content")
    if att.content is None:
        raise InvalidMessage(f"{where}: content (base64) is required")
    maintype, slash, subtype = att.content_type.partition("/")
    if not (slash and maintype and subtype) or not att.content_type.isascii():
        raise InvalidMessage(f"{where}: {att.content_type!r} is not a MIME type")
    try:
        content = base64.b64decode(att.content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage(f"{where}: content is not valid base64") from None
    cid = check_header_value(f"{where}.cid", att.cid) if att.cid else None
    return Attachment(att.filename, att.content_type.lower(), content, cid)


def _check_limits(message: Message, limits: LimitSettings) -> None:
    rcpts = len(message.envelope_recipients)
    if rcpts > limits.max_recipients:
        raise InvalidMessage(f"{rcpts} recipients, over the limit of {limits.max_recipients}")
    size = estimated_size(message)
    if size > limits.max_message_size:
        raise InvalidMessage(
            f"message is about {size} bytes, over the limit of {limits.max_message_size}"
        )


def estimated_size(message: Message) -> int:
    """Encoded size: bodies plus base64 attachments (4/3) plus a header allowance."""
    bodies = len((message.text or "").encode()) + len((message.html or "").encode())
    files = sum((len(a.content) + 2) // 3 * 4 for a in message.attachments)
    return bodies + files + 1024


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "mailgate.local"


class Submissions:
    """Validate a batch and commit its good items in one transaction."""

    def __init__(
        self,
        queue: QueueStore,
        clock: Clock,
        *,
        default_from: str,
        limits: LimitSettings,
        on_queued: Callable[[], None],
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.default_from = default_from
        self.limits = limits
        self.on_queued = on_queued

    async def submit(self, items: Sequence[object], tenant: str = "default") -> SubmissionReport:
        now = self.clock.now()
        report = SubmissionReport()
        good: list[tuple[int, Message]] = []
        if len(items) > self.limits.max_batch:
            reason = f"batch of {len(items)} messages is over the limit of {self.limits.max_batch}"
            report.rejected = [Rejected(i, _key(x), reason) for i, x in enumerate(items)]
            return report
        for index, item in enumerate(items):
            try:
                good.append(
                    (
                        index,
                        parse_message_json(
                            item,
                            tenant=tenant,
                            default_from=self.default_from,
                            limits=self.limits,
                            now=now,
                        ),
                    )
                )
            except InvalidMessage as exc:
                report.rejected.append(Rejected(index, _key(item), str(exc)))
        if good:
            results = await self.queue.enqueue([m for _, m in good], now)
            for (index, _), result in zip(good, results, strict=True):
                report.ids.append(result.id)
                if result.duplicate:
                    report.duplicates.append(index)
            self.on_queued()
        return report


def _key(item: object) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None
