"""Submissions: validate message JSON (DESIGN §3) and queue it.

REST, SMTP submission and the Firestore watcher all end in :meth:`Submissions.submit`,
so every path validates the same way and commits before it acknowledges. What
validation accepts must build (``mailgate.mime``), fit the limits, and be storable on
both engines; anything else is one rejected item with its reason, never a failure of
the batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mailgate.clock import Clock
from mailgate.deliver.attachments import check_volume_path
from mailgate.deliver.fetch import check_url
from mailgate.errors import InvalidMessage
from mailgate.ids import new_id
from mailgate.ingest.addresses import parse_address_list, parse_mailbox
from mailgate.ingest.metadata import check_metadata
from mailgate.ingest.schema import message_schema
from mailgate.ingest.unsubscribe import ListUnsubscribeIn, list_unsubscribe_headers
from mailgate.ingest.validation import (
    MIME_TYPE_PATTERN,
    base_filename,
    check_body,
    check_cid,
    check_content_type,
    check_header_name,
    check_header_text,
    check_plain_text,
)
from mailgate.model import Attachment, Message, Priority, mailbox
from mailgate.settings import LimitSettings
from mailgate.store import QueueStore

__all__ = ["MessageIn", "Rejected", "SubmissionReport", "Submissions", "parse_message_json"]


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(
        "application/octet-stream", json_schema_extra={"pattern": MIME_TYPE_PATTERN}
    )
    content: str | None = Field(None, description="base64; or give url or path")
    url: str | None = Field(
        None, max_length=2048, description="http(s) URL fetched when the message is sent"
    )
    path: str | None = Field(
        None,
        max_length=1024,
        description="volume:sub/path: a file in a directory the server's settings name,"
        " read when the message is sent",
    )
    cid: str | None = None


class MessageIn(BaseModel):
    """A message as clients submit it; ``id`` is the client's idempotency key."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra=message_schema
    )

    id: str | None = Field(None, min_length=1, max_length=255)
    account: str = Field("default", max_length=64)
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
    list_unsubscribe: ListUnsubscribeIn | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    id: str | None
    reason: str
    status: int | None = None  #: 429: refused for the account's rate limit, not invalid


class Admission(Protocol):
    """``limit_behavior: reject`` (``mailgate.deliver.admission.RateAdmission``)."""

    async def refusal(self, message: Message, now: datetime) -> str | None:
        """Why ``message`` is over its account's rate limit; None to queue it."""
        ...


@dataclass(slots=True)
class SubmissionReport:
    ids: list[str] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  #: indexes whose key was already queued
    rejected: list[Rejected] = field(default_factory=list)


def parse_message_json(
    item: object,
    *,
    tenant: str,
    default_from: str,
    limits: LimitSettings,
    now: datetime,
    max_attachment: int | None = None,
    source: str = "rest",
) -> Message:
    """Validate one submitted message; :class:`InvalidMessage` says what is wrong.
    ``source``: where it came from (``rest``, ``smtp``, ``firestore:<document path>``).

    ``max_attachment``: the most bytes one attachment given inline may hold (the same
    limit ``url`` and ``path`` attachments meet when they are resolved).
    """
    data = _model(item)
    line = limits.max_header_value
    sender = parse_mailbox("from", data.from_ or default_from, limit=line)
    message = Message(
        id=new_id(),
        tenant=tenant,
        key=check_plain_text("id", data.id) if data.id is not None else None,
        account=data.account,
        sender=sender,
        to=_recipients("to", [data.to] if isinstance(data.to, str) else data.to, line),
        cc=_recipients("cc", data.cc, line),
        bcc=_recipients("bcc", data.bcc, line),
        reply_to=parse_mailbox("reply_to", data.reply_to, limit=line) if data.reply_to else None,
        subject=check_header_text("subject", data.subject, limit=limits.max_subject_length),
        text=check_body("text", data.text),
        html=check_body("html", data.html),
        headers=_headers(data.headers, limits) | _unsubscribe(data.list_unsubscribe, data.headers),
        attachments=tuple(
            _attachment(i, a, max_attachment) for i, a in enumerate(data.attachments)
        ),
        priority=Priority[data.priority.upper()],
        send_at=_utc("send_at", data.send_at) if data.send_at else None,
        metadata=check_metadata(
            data.metadata, max_depth=limits.max_metadata_depth, max_bytes=limits.max_metadata_bytes
        ),
        message_id=f"<{new_id()}@{_domain(sender)}>",
        created_at=now,
        source=source,
    )
    _check_limits(message, limits)
    return message


def _model(item: object) -> MessageIn:
    """The item's shape (pydantic) and the required fields it cannot express.

    The account is not checked here: a message for an unknown or disabled account is
    accepted and waits, queued with the reason shown, until the account can send.
    """
    try:
        data = MessageIn.model_validate(item)
    except ValidationError as exc:
        raise InvalidMessage(_pydantic_reason(exc)) from None
    if data.text is None and data.html is None:
        raise InvalidMessage("text or html is required")
    if not data.to:
        raise InvalidMessage("to: at least one recipient is required")
    return data


def _pydantic_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(_printable(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg'].lower()}")
    return "; ".join(parts)


def _printable(part: object) -> str:
    """A location part (a dict key may be any text) made safe to echo back as JSON."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def _utc(where: str, value: datetime) -> datetime:
    """``value`` in UTC; a time whose UTC falls outside the years 1-9999 (year 1 at +14:00)
    cannot be held by a ``datetime`` at all."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidMessage(f"{where}: {value.isoformat()} is out of range in UTC") from None


def _recipients(where: str, entries: list[str], limit: int) -> tuple[str, ...]:
    """Each entry may itself be a list (``"a@x.com, b@x.com"``): every mailbox is kept."""
    return tuple(a for entry in entries for a in parse_address_list(where, entry, limit=limit))


def _headers(headers: dict[str, str], limits: LimitSettings) -> dict[str, str]:
    if len(headers) > limits.max_headers:
        raise InvalidMessage(
            f"headers: {len(headers)} custom headers, over the limit of {limits.max_headers}"
        )
    return {
        check_header_name(k): check_header_text(f"headers.{k}", v, limit=limits.max_header_value)
        for k, v in headers.items()
    }


def _unsubscribe(value: ListUnsubscribeIn | None, headers: dict[str, str]) -> dict[str, str]:
    return list_unsubscribe_headers(value, headers) if value is not None else {}


def _attachment(index: int, att: AttachmentIn, max_size: int | None) -> Attachment:
    where = f"attachments.{index}"
    filename = base_filename(f"{where}.filename", att.filename)
    content_type = check_content_type(f"{where}.content_type", att.content_type)
    cid = check_cid(f"{where}.cid", att.cid) if att.cid is not None else None
    given = [k for k in ("content", "url", "path") if getattr(att, k) is not None]
    if len(given) != 1:
        raise InvalidMessage(f"{where}: give exactly one of content (base64), url or path")
    if att.url is not None:
        return Attachment(filename, content_type, b"", cid, url=_source(where, "url", att.url))
    if att.path is not None:
        return Attachment(filename, content_type, b"", cid, path=_source(where, "path", att.path))
    try:
        content = base64.b64decode(att.content or "", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage(f"{where}: content is not valid base64") from None
    if max_size is not None and len(content) > max_size:
        raise InvalidMessage(
            f"{where}: {len(content)} bytes is over the attachment limit of {max_size} bytes"
            " (attachments.max_attachment_size)"
        )
    return Attachment(filename, content_type, content, cid)


def _source(where: str, kind: str, value: str) -> str:
    """A url (http/https, absolute) or a path (``volume:sub/path``, no way out) as written:
    fetched or read when the message is sent, under the attachment limits then."""
    check_plain_text(f"{where}.{kind}", value)
    try:
        if kind == "url":
            check_url(value)
        else:
            check_volume_path(value)
    except ValueError as exc:
        raise InvalidMessage(f"{where}.{kind}: {exc}") from None
    return value


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
    """Encoded size: bodies, base64 attachments (4/3), header text, plus a fixed allowance
    for the headers mailgate writes itself (Date, Message-ID, MIME framing)."""
    bodies = len((message.text or "").encode()) + len((message.html or "").encode())
    files = sum(
        (len(a.content) + 2) // 3 * 4 + _header_size(a.filename) for a in message.attachments
    )
    return bodies + files + _headers_size(message) + 1024


def _headers_size(message: Message) -> int:
    addresses = (message.sender, *message.to, *message.cc, message.reply_to or "")
    custom = sum(len(k) + 4 + _header_size(v) for k, v in message.headers.items())
    return _header_size(message.subject) + sum(_header_size(a) for a in addresses) + custom


def _header_size(value: str) -> int:
    """UTF-8 bytes; non-ASCII text goes out as RFC 2047 encoded words (base64 4/3 plus
    the ``=?utf-8?b?…?=`` framing of each word), counted here as twice its bytes."""
    size = len(value.encode())
    return size if value.isascii() else 2 * size


def _domain(address: str) -> str:
    return mailbox(address)[1].rpartition("@")[2] or "mailgate.local"


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
        admission: Admission | None = None,
        max_attachment: int | None = None,
    ) -> None:
        self.admission = admission
        self.max_attachment = max_attachment
        self.queue = queue
        self.clock = clock
        self.default_from = default_from
        self.limits = limits
        self.on_queued = on_queued

    async def submit(
        self,
        items: Sequence[object],
        tenant: str = "default",
        *,
        source: str | Sequence[str] = "rest",
    ) -> SubmissionReport:
        """Validate, admit and queue ``items``; each bad one is rejected on its own.
        ``source``: of every item, or one per item."""
        now = self.clock.now()
        report = SubmissionReport()
        if len(items) > self.limits.max_batch:
            reason = f"batch of {len(items)} messages is over the limit of {self.limits.max_batch}"
            report.rejected = [Rejected(i, _key(x), reason) for i, x in enumerate(items)]
            return report
        # Parsing is CPU work (address syntax, base64, a thousand items): a worker thread
        # keeps the event loop serving the API and SMTP sessions meanwhile.
        good, report.rejected = await asyncio.to_thread(self._parse_all, items, tenant, now, source)
        good = await self._admit(good, report, now)
        if good:
            results = await self.queue.enqueue([m for _, m in good], now)
            for (index, _), result in zip(good, results, strict=True):
                report.ids.append(result.id)
                if result.duplicate:
                    report.duplicates.append(index)
            self.on_queued()
        return report

    async def queue_one(self, message: Message) -> str | None:
        """Admit and commit a message built elsewhere (SMTP submission): None once it is
        queued, or why it was not (over its account's rate limit: try later)."""
        now = self.clock.now()
        if self.admission is not None:
            reason = await self.admission.refusal(message, now)
            if reason is not None:
                return reason
        await self.queue.enqueue([message], now)
        self.on_queued()
        return None

    async def _admit(
        self, good: list[tuple[int, Message]], report: SubmissionReport, now: datetime
    ) -> list[tuple[int, Message]]:
        """Valid items over their account's rate limit become 429 rejections."""
        if self.admission is None:
            return good
        admitted = []
        for index, message in good:
            reason = await self.admission.refusal(message, now)
            if reason is None:
                admitted.append((index, message))
            else:
                report.rejected.append(Rejected(index, message.key, reason, status=429))
        report.rejected.sort(key=lambda r: r.index)
        return admitted

    def _parse_all(
        self, items: Sequence[object], tenant: str, now: datetime, source: str | Sequence[str]
    ) -> tuple[list[tuple[int, Message]], list[Rejected]]:
        """Each item on its own: one bad item is one rejection, never the batch's."""
        good: list[tuple[int, Message]] = []
        rejected: list[Rejected] = []
        for index, item in enumerate(items):
            origin = source if isinstance(source, str) else source[index]
            try:
                good.append((index, self._parse(item, tenant, now, origin)))
            except InvalidMessage as exc:
                rejected.append(Rejected(index, _key(item), str(exc)))
        return good, rejected

    def _parse(self, item: object, tenant: str, now: datetime, source: str) -> Message:
        return parse_message_json(
            item,
            tenant=tenant,
            default_from=self.default_from,
            limits=self.limits,
            now=now,
            max_attachment=self.max_attachment,
            source=source,
        )


def _key(item: object) -> str | None:
    """The rejected item's own id, echoed back only if it is printable text."""
    value = item.get("id") if isinstance(item, dict) else None
    try:
        return check_plain_text("id", value) if isinstance(value, str) else None
    except InvalidMessage:
        return None
