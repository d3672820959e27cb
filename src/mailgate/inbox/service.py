"""The inbox: parse what arrives, commit it, serve it back.

Both the SMTP capture server and the capture transport land here, so in
development mail from every source ends up in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from mailgate.blockwise import b64_text, utf8_text
from mailgate.clock import Clock
from mailgate.errors import NotFound
from mailgate.ids import new_id
from mailgate.inbox.attachment_files import AttachmentFiles, Staging
from mailgate.inbox.events import EventKind, InboxEvent, InboxEvents, Subscription
from mailgate.inbox.extract import Code, Link, compile_code_pattern, find_codes, find_links
from mailgate.inbox.search import parse_query
from mailgate.inbox.sorting import SortBy, box_for, clean_tags, message_id, tags_for
from mailgate.inbox.wait import WaitFor, wait_for
from mailgate.mime import ParsedAttachment, ParsedMessage, parse_message
from mailgate.mime.parts import MimePart, PartList, mime_parts, mime_parts_into
from mailgate.mime.stream import Discard
from mailgate.store import CapturedRecord, InboxStore
from mailgate.store.inbox import BoxCount, Pruned, RawFile
from mailgate.store.schema import sanitize_json

__all__ = ["PROBLEMS_KEY", "CaptureMeta", "Download", "Inbox", "capture_event"]

#: Where a record keeps its parse problems: in the headers JSON, under a key that
#: can never be a header field name (RFC 5322 §2.2: field names contain no ":").
#: ``capture_event`` moves them to ``message.problems``.
PROBLEMS_KEY = "mailgate:problems"

T = TypeVar("T")

#: links and codes of a message bigger than this are looked for in a worker thread
_THREAD_ABOVE = 32_768


@dataclass(frozen=True, slots=True)
class CaptureMeta:
    """Everything about a capture that is not in the message bytes."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    source: str = "smtp"  #: smtp | api
    remote_addr: str | None = None
    helo: str | None = None
    auth: dict[str, Any] | None = None  #: {"mechanism", "username", "password"}
    tenant: str = "default"
    #: what the SMTP session saw wrong in the transfer itself (bare line endings in DATA)
    problems: tuple[str, ...] = ()
    #: the inbox it goes to whatever ``inbox.sort_by`` says (mail sent through a
    #: per-inbox API address); None: sorted
    box: str | None = None


class Inbox:
    def __init__(
        self,
        store: InboxStore,
        clock: Clock,
        *,
        files: AttachmentFiles | None = None,
        sort_by: SortBy = SortBy.NONE,
        code_pattern: str | None = None,
        max_age_days: float = 0.0,
        box_max_age_days: Mapping[str, float | None] | None = None,
    ) -> None:
        """``files``: where the capture server writes attachments for its handlers
        (``smtp.attachment_storage.mode = tempfile``); a deleted message's go with it.
        ``sort_by``: what names the inbox captured mail goes to (``inbox.sort_by``).
        ``code_pattern``: what else a one-time code may look like (``inbox.code_pattern``).
        ``max_age_days``: how old captured mail may grow before :meth:`prune` deletes it,
        or ``box_max_age_days[box]`` in a box named there (None: the same; 0: kept)."""
        self.store = store
        self.max_age_days = max_age_days
        self.box_max_age_days = dict(box_max_age_days or {})
        self.clock = clock
        self.files = files
        self.sort_by = sort_by
        self.code_pattern = compile_code_pattern(code_pattern) if code_pattern else None
        #: captures, deletes and clears in this process, for waiters and event streams
        self.events = InboxEvents()
        #: held while a big message is copied out for a download: each copy holds one
        #: of the store's reading connections throughout, and the inbox's lists wait
        #: for one (16 downloads at once made a list take 1.1 s)
        self._big_copies = asyncio.Semaphore(2)

    async def capture(self, raw: bytes, meta: CaptureMeta) -> CapturedRecord:
        """Parse and commit; when this returns the message is durable.

        A big or many-part message is parsed in a worker thread: a hostile one (40,000
        headers, deep nesting) then costs its own session time, never the event loop's.
        A small single-part one is parsed on the loop (:func:`_parsed_on_loop`).
        """
        record, _ = await self.capture_parsed(raw, meta)
        return record

    async def capture_parsed(
        self, raw: bytes, meta: CaptureMeta
    ) -> tuple[CapturedRecord, ParsedMessage]:
        """:meth:`capture`, and the message as parsed (its attachments' bytes, for the
        capture handlers)."""
        if _parsed_on_loop(raw):
            parsed = parse_message(raw)
        else:
            parsed = await asyncio.to_thread(parse_message, raw)
        record = self._record(new_id(), parsed, meta, len(raw))
        return await self._added(record, raw), parsed

    async def capture_spooled(
        self, path: Path, size: int, meta: CaptureMeta
    ) -> tuple[CapturedRecord, ParsedMessage, list[str] | None]:
        """:meth:`capture_parsed` and :meth:`attachment_paths` of a message in a file (a
        DATA block spooled to disk in tempfile mode), never whole in memory: parsed in a
        thread from the file mapped into memory, each attachment decoded a block at a
        time into its file (``content`` stays empty), the message copied into the store
        a block at a time (on SQLite). The spool file stays the caller's."""
        capture_id = new_id()
        staging = self.files.staging(capture_id) if self.files is not None else None
        try:
            parsed = await asyncio.to_thread(_parse_file, path, staging)
            record = await self._added(
                self._record(capture_id, parsed, meta, size), RawFile(path, size)
            )
        except BaseException:
            if staging is not None:
                await asyncio.to_thread(staging.discard)
            raise
        if self.files is None or staging is None:
            return record, parsed, None
        try:
            paths = await self.files.adopt(capture_id, staging, parsed.attachments)
        except BaseException:
            await self._forget(record)
            raise
        return record, parsed, paths

    def _record(
        self, capture_id: str, parsed: ParsedMessage, meta: CaptureMeta, size: int
    ) -> CapturedRecord:
        """The record as the store keeps it: every string cleaned by the store's own
        rule (:func:`sanitize_json`: NUL and lone surrogates become U+FFFD) before
        anyone sees it, so the handlers, the live event streams and a read from the
        store get the same text. Left as the client sent it, a HELO with a byte that is
        not UTF-8 (kept as a surrogate escape) made a webhook's JSON unencodable (451 on
        every retry) and the Mailpit WebSocket drop, and a NUL in a Subject reached the
        SSE stream while a read showed U+FFFD."""
        record = CapturedRecord(
            id=capture_id,
            tenant=meta.tenant,
            source=meta.source,
            received_at=self.clock.now(),
            remote_addr=meta.remote_addr,
            helo=meta.helo,
            mail_from=meta.mail_from,
            rcpt_to=list(meta.rcpt_to),
            auth=meta.auth,
            subject=parsed.subject,
            from_header=parsed.sender,
            to_header=parsed.to,
            headers=_headers(parsed, meta.problems),
            text=parsed.text,
            html=parsed.html,
            attachments=[_describe(i, a) for i, a in enumerate(parsed.attachments)],
            size=size,
            box=meta.box
            or box_for(self.sort_by, auth=meta.auth, headers=parsed.headers, rcpt_to=meta.rcpt_to),
            tags=tags_for(parsed.headers, meta.rcpt_to),
            message_id=message_id(parsed.headers),
        )
        cleaned = {f.name: sanitize_json(getattr(record, f.name)) for f in fields(record)}
        return replace(record, **cleaned)

    async def _added(self, record: CapturedRecord, raw: bytes | RawFile) -> CapturedRecord:
        """Commit a captured message and announce it (and what made room for it)."""
        pruned = await self.store.add(record, raw)
        self.events.publish(InboxEvent(EventKind.NEW, record.tenant, record, record.id))
        if pruned:  # max_messages made room in its inbox
            self.events.publish(
                InboxEvent(EventKind.PRUNE, record.tenant, box=record.box, count=pruned)
            )
            if self.files is not None:  # and the pruned messages' files go
                self.files.sweep_soon()
        return record

    async def attachment_paths(
        self, record: CapturedRecord, attachments: Sequence[ParsedAttachment]
    ) -> list[str] | None:
        """With ``files``, write a captured message's attachments to files and return
        their paths; else None (memory mode). A message whose files cannot be written is
        deleted before the error is raised: the client hears 451, and its retry must not
        be a duplicate."""
        if self.files is None:
            return None
        try:
            return await self.files.write(record.id, attachments)
        except BaseException:
            await self._forget(record)
            raise

    async def _forget(self, record: CapturedRecord) -> None:
        """Delete a message just committed whose files could not be written."""
        with contextlib.suppress(Exception):
            await self.store.delete(record.id, record.tenant)
            self._deleted(record.id, record.tenant, record.box)

    async def sweep_files(self) -> None:
        """Remove attachment files past ``cleanup_after`` or of messages no longer kept
        (pruned by ``inbox.max_messages`` or ``max_age_days``), for as long as it runs."""
        if self.files is not None:
            await self.files.sweep_every(self.store.existing)

    async def list(
        self,
        tenant: str,
        *,
        query: str | None = None,
        box: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[CapturedRecord], str | None]:
        """Newest first, of one inbox (``box``) or all; ``query`` in Mailpit's search
        syntax (:mod:`mailgate.inbox.search`; a plain word matches subject, addresses
        and bodies). A date or size it cannot read raises ``InvalidInput``."""
        terms = parse_query(query) if query else ()
        return await self.store.list(tenant, box=box, query=terms, limit=limit, cursor=cursor)

    async def get(
        self, capture_id: str, tenant: str, *, box: str | None = None, mark_read: bool = False
    ) -> CapturedRecord:
        """One captured message (NotFound if not in ``box``, when given); ``mark_read``
        when a person or a client opens it, as Mailpit does (and tells the readers, as
        Mailpit does each time)."""
        record = await self.store.get(capture_id, tenant, box=box, mark_read=mark_read)
        if mark_read:
            self._updated(record, read=True)
        return record

    async def update(
        self,
        capture_id: str,
        tenant: str,
        *,
        box: str | None = None,
        read: bool | None = None,
        tags: Sequence[str] | None = None,
    ) -> CapturedRecord:
        """Mark read or unread and replace the tags (cleaned as capture cleans them:
        Mailpit's characters, at most 32 of 64 characters, no repeats)."""
        cleaned = clean_tags(tags) if tags is not None else None
        record = await self.store.update(capture_id, tenant, box=box, read=read, tags=cleaned)
        if read is not None or cleaned is not None:
            self._updated(record, read=read, tags=tuple(record.tags) if tags is not None else None)
        return record

    def _updated(
        self, record: CapturedRecord, *, read: bool | None, tags: tuple[str, ...] | None = None
    ) -> None:
        # no ``record``: a waiter must not take a message it already had for a new one
        kind, tenant = EventKind.UPDATE, record.tenant
        event = InboxEvent(kind, tenant, capture_id=record.id, box=record.box, read=read, tags=tags)
        self.events.publish(event)

    async def boxes(self, tenant: str) -> tuple[BoxCount, ...]:
        """The tenant's inboxes holding mail, with their total and unread counts."""
        return await self.store.boxes(tenant)

    async def raw(self, capture_id: str, tenant: str, *, head: int | None = None) -> bytes:
        """The message exactly as it arrived (its first ``head`` octets, when given)."""
        return await self.store.raw(capture_id, tenant, head=head)

    async def header_block(self, capture_id: str, tenant: str) -> bytes:
        """The message's start, its header block whole: the first :data:`HEAD` octets
        when the block ends within them, else all of it (Mailpit's and the UI's header
        views read 68 MiB for a few hundred octets of fields)."""
        head = await self.store.raw(capture_id, tenant, head=HEAD)
        if len(head) < HEAD or _BLANK_LINE.search(head) is not None:
            return head
        return await self.store.raw(capture_id, tenant)

    async def parts(self, capture_id: str, tenant: str) -> PartList:
        """Mailpit's attachments and inline parts of the message (parsed in a worker
        thread), each with its size and digests, never its contents (those are
        :meth:`part_downloads`).

        Of a big message, the list is made as downloads are: the message copied into a
        file a block at a time and parsed from there, each part decoded into its digests
        (four views of a 68 MiB message held +475 MiB, parsed in memory)."""
        record = await self.store.get(capture_id, tenant)
        if record.size <= STREAM_ABOVE:
            raw = await self.store.raw(capture_id, tenant)
            return await asyncio.to_thread(mime_parts, raw, contents=False)
        with tempfile.TemporaryFile() as file:
            async with self._big_copies:
                await self.store.copy_raw(capture_id, tenant, file)
            return await asyncio.to_thread(_listed, file)

    async def part_download(self, capture_id: str, part_id: str, tenant: str) -> Download:
        """The decoded bytes of the listed part ``part_id`` (Mailpit's numbering,
        :meth:`PartList.find`) for a download (:meth:`part_downloads`); NotFound when
        the message lists no such part."""
        chosen = await self.part_downloads(capture_id, tenant, lambda p: p.part_id == part_id)
        if not chosen:
            raise NotFound(f"captured message {capture_id} has no part {part_id}")
        return chosen[0][1]

    async def part_downloads(
        self, capture_id: str, tenant: str, wanted: Callable[[MimePart], bool]
    ) -> Sequence[tuple[MimePart, Download]]:
        """The listed parts ``wanted`` keeps (it may be asked in a worker thread), in
        :meth:`PartList.each` order, each with its decoded bytes for a download.

        A small message is decoded in memory. A big one is copied from the store into a
        file a block at a time and parsed from there, as :meth:`attachment_download`
        does, the wanted parts each decoded into a file of its own and the others not at
        all: four Mailpit downloads of a 50 MiB inline image at once each decoded every
        part of the message in memory, one at a time."""
        record = await self.store.get(capture_id, tenant)
        if record.size <= STREAM_ABOVE:
            raw = await self.store.raw(capture_id, tenant)
            parts = await asyncio.to_thread(mime_parts, raw)
            return [(p, _in_memory(p)) for p in parts.each() if wanted(p)]
        with tempfile.TemporaryFile() as file:
            async with self._big_copies:
                await self.store.copy_raw(capture_id, tenant, file)
            return await asyncio.to_thread(_chosen_parts, file, wanted)

    async def raw_download(self, capture_id: str, tenant: str) -> Download:
        """:meth:`raw` for a download: a big message in a file copied from the store a
        block at a time (read from its start), never whole in memory."""
        record = await self.store.get(capture_id, tenant)
        if record.size <= STREAM_ABOVE:
            raw = await self.store.raw(capture_id, tenant)
            return Download(None, "message/rfc822", len(raw), content=raw)
        file = tempfile.TemporaryFile()  # noqa: SIM115 (handed on open; gone once closed)
        try:
            async with self._big_copies:
                await self.store.copy_raw(capture_id, tenant, file)
            size = file.tell()
            file.seek(0)
        except BaseException:
            file.close()
            raise
        return Download(None, "message/rfc822", size, file=file)

    async def attachment_download(self, capture_id: str, index: int, tenant: str) -> Download:
        """:meth:`attachment` for a download. Of a big message, the message is copied
        from the store into a file a block at a time and parsed from there as tempfile
        mode captures it, this attachment decoded into a file of its own (the others
        decoded into nothing): four downloads of a 50 MiB attachment at once cost 500
        MiB when each parse held the message and its attachments in memory."""
        record = await self.store.get(capture_id, tenant)
        if record.size <= STREAM_ABOVE:
            att = await self.attachment(capture_id, index, tenant)
            return Download(att.filename, att.content_type, len(att.content), content=att.content)
        if not 0 <= index < len(record.attachments):
            raise NotFound(f"captured message {capture_id} has no attachment {index}")
        folder = Path(tempfile.mkdtemp(prefix="mailgate-download-"))
        try:
            with (folder / "raw").open("wb") as raw:
                async with self._big_copies:
                    await self.store.copy_raw(capture_id, tenant, raw)
            parsed = await asyncio.to_thread(_one_attachment, folder, index)
            if index >= len(parsed.attachments):  # (the record's came from such a parse)
                raise NotFound(f"captured message {capture_id} has no attachment {index}")
            file = (folder / "attachment").open("rb")  # read on once its name is gone
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        att = parsed.attachments[index]
        return Download(att.filename, att.content_type, att.size, file=file)

    async def delete(self, capture_id: str, tenant: str, *, box: str | None = None) -> None:
        """Delete a captured message (only from ``box``, when given), and its attachment
        files."""
        if box is None:  # which inbox it was in, for the readers of one inbox
            box = (await self.store.get(capture_id, tenant)).box
        await self.store.delete(capture_id, tenant, box=box)
        self._deleted(capture_id, tenant, box)
        if self.files is not None:
            await self.files.remove(capture_id)

    def _deleted(self, capture_id: str, tenant: str, box: str) -> None:
        self.events.publish(InboxEvent(EventKind.DELETE, tenant, capture_id=capture_id, box=box))

    async def clear(
        self, tenant: str | None, *, box: str | None = None, query: str | None = None
    ) -> int:
        """Delete a tenant's captured mail (everyone's with ``None``), only one inbox's
        with ``box``, only what ``query`` matches, and its attachment files; returns how
        many. A ``query`` with no term deletes nothing: an empty search variable must
        not empty the inbox."""
        terms = parse_query(query) if query is not None else ()
        if query is not None and not terms:
            return 0
        cleared = await self.store.clear(tenant, box=box, query=terms)
        if cleared:
            partial = query is not None
            event = InboxEvent(EventKind.CLEAR, tenant, box=box, count=cleared, partial=partial)
            self.events.publish(event)
        if self.files is not None:  # what was cleared is no longer in the inbox
            await self.files.sweep(self.store.existing)
        return cleared

    async def prune(self) -> tuple[Pruned, ...]:
        """Delete captured mail past its inbox's age limit, tell each inbox's readers
        how many went, and remove the attachment files; what went, per inbox."""
        now = self.clock.now()

        def cutoff(days: float) -> datetime | None:
            return now - timedelta(days=days) if days else None

        pruned = await self.store.prune_older(
            cutoff(self.max_age_days),
            box_cutoffs={
                box: cutoff(self.max_age_days if days is None else days)
                for box, days in self.box_max_age_days.items()
            },
        )
        for p in pruned:
            self.events.publish(InboxEvent(EventKind.PRUNE, p.tenant, box=p.box, count=p.count))
        if pruned and self.files is not None:
            await self.files.sweep(self.store.existing)
        return pruned

    async def count(self) -> int:
        return await self.store.count()

    def subscribe(self, tenant: str) -> Subscription:
        """A reader of ``tenant``'s captures, deletes and clears in this process (a
        context manager; close it when done)."""
        return self.events.subscribe(tenant)

    async def wait(self, tenant: str, want: WaitFor, *, within: float) -> CapturedRecord | None:
        """The newest message ``want`` matches, as soon as there is one (marked read, as
        ``get`` marks it); None after ``within`` seconds. A bad ``want.query`` raises
        ``InvalidInput`` before any waiting."""
        with self.subscribe(tenant) as sub:
            found = await wait_for(self, sub, want, within=within)
        if found is None:
            return None
        return await self.get(found.id, tenant, mark_read=True)

    async def links(
        self, capture_id: str, tenant: str, *, box: str | None = None
    ) -> Sequence[Link]:
        """Every link in the message's HTML and text, once each, with its anchor text."""
        record = await self.get(capture_id, tenant, box=box)
        return await _off_loop(record, find_links, record.text, record.html)

    async def codes(
        self, capture_id: str, tenant: str, *, box: str | None = None, pattern: str | None = None
    ) -> Sequence[Code]:
        """The message's likely one-time codes, best first; ``pattern`` (checked, else
        ``InvalidInput``) instead of ``inbox.code_pattern``."""
        compiled = compile_code_pattern(pattern) if pattern else self.code_pattern
        record = await self.get(capture_id, tenant, box=box)
        return await _off_loop(
            record,
            lambda: find_codes(
                subject=record.subject, text=record.text, html=record.html, pattern=compiled
            ),
        )

    async def attachment(self, capture_id: str, index: int, tenant: str) -> ParsedAttachment:
        """The exact decoded bytes of attachment ``index`` (re-parsed from the raw message)."""
        raw = await self.store.raw(capture_id, tenant)
        parsed = await asyncio.to_thread(parse_message, raw)
        if not 0 <= index < len(parsed.attachments):
            raise NotFound(f"captured message {capture_id} has no attachment {index}")
        return parsed.attachments[index]


async def _off_loop(record: CapturedRecord, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, in a worker thread when the message's bodies are big."""
    if len(record.text or "") + len(record.html or "") > _THREAD_ABOVE:
        return await asyncio.to_thread(work, *args)
    return work(*args)


def _headers(parsed: ParsedMessage, transfer: tuple[str, ...] = ()) -> dict[str, Any]:
    problems = [*transfer, *parsed.problems]
    if not problems:
        return dict(parsed.headers)
    return {**parsed.headers, PROBLEMS_KEY: problems}


def _describe(index: int, att: ParsedAttachment) -> dict[str, Any]:
    return {
        "index": index,
        "filename": att.filename,
        "content_type": att.content_type,
        "size": att.size,
        "cid": att.cid,
        "inline": att.inline,
    }


def capture_event(
    record: CapturedRecord,
    *,
    raw: bytes | None = None,
    contents: list[bytes] | None = None,
    paths: list[str] | None = None,
) -> dict[str, Any]:
    """The capture event of DESIGN §3, as handlers and ``GET /inbox/{id}`` see it.

    Attachment content is included only when ``contents`` is given (memory mode), each
    attachment's file only when ``paths`` is (tempfile mode). Big values are encoded a
    block at a time (:mod:`mailgate.blockwise`): the SMTP server makes a big message's
    event in a worker thread, which must not hold the GIL for long.
    ``message.problems`` lists what the parser could not read fully (empty when it
    read everything); the raw source always has the whole message.
    """
    headers = dict(record.headers)
    problems = headers.pop(PROBLEMS_KEY, [])
    raw_text, raw_bytes = _raw(raw)
    attachments = []
    for i, att in enumerate(record.attachments):
        item = {k: att[k] for k in ("filename", "content_type", "size", "cid", "inline")}
        item["index"] = i
        if contents is not None:
            item["content"] = b64_text(contents[i])
        if paths is not None:
            item["path"] = paths[i]
        attachments.append(item)
    return {
        "event": "EMAIL_RECEIVED",
        "id": record.id,
        "uuid": record.id,
        "inbox": record.box,
        "read": record.read,
        "tags": record.tags,
        "source": record.source,
        "remote_addr": record.remote_addr,
        "received_at": record.received_at.isoformat().replace("+00:00", "Z"),
        "envelope": {"from": record.mail_from, "to": record.rcpt_to, "helo": record.helo},
        "authentication": _auth(record.auth),
        "message": {
            "headers": headers,
            "subject": record.subject,
            "from": record.from_header,
            "to": record.to_header,
            "message_id": record.message_id,
            "body": record.text,
            "html": record.html,
            "raw": raw_text,
            "problems": problems,
            **raw_bytes,
        },
        "size": record.size,
        "attachments": attachments,
    }


def _raw(raw: bytes | None) -> tuple[str | None, dict[str, str]]:
    """``message.raw``, the message as text (U+FFFD for what is not UTF-8), and
    ``raw_base64``, the message byte for byte, when that text cannot give it back: 8-bit
    mail in latin-1, say. A UTF-8 message is decoded once."""
    if raw is None:
        return None, {}
    try:
        return utf8_text(raw, "strict"), {}
    except UnicodeDecodeError:
        return utf8_text(raw), {"raw_base64": b64_text(raw)}


def _auth(auth: dict[str, Any] | None) -> dict[str, Any]:
    if not auth:
        return {"attempted": False, "mechanism": None, "username": None, "password": None}
    return {"attempted": True, **auth}


#: A message under this size and with at most this many MIME boundary lines is parsed
#: on the event loop: for a message of a few KB, handing the parse to a thread costs the
#: loop more (submit, future, wake-up) than the parse itself (docs/benchmarks.md). The
#: boundaries bound the worst case: a 60 KB message of 1,700 parts parses in 110 ms, one
#: of 64 parts in a few, 40 KB of text or headers in well under that. The semicolons
#: bound MIME parameters: the email package reads each in about 0.05 ms, three times
#: for a Content-Type, so 3,000 of them in 43 KB held the loop half a second.
_LOOP_PARSE_SIZE = 64 * 1024
_LOOP_PARSE_BOUNDARIES = 64
_LOOP_PARSE_SEMICOLONS = 256


def _parse_file(path: Path, staging: Staging | None) -> ParsedMessage:
    """Parse a spooled message (in a worker thread), its attachments decoded into the
    files ``staging`` opens."""
    sink = staging.sink if staging else None
    with path.open("rb") as f:
        return _mapped(f, lambda source: parse_message(source, attachment_sink=sink))


def _one_attachment(folder: Path, index: int) -> ParsedMessage:
    """Parse ``folder/raw`` (in a worker thread) with attachment ``index`` decoded into
    ``folder/attachment`` and every other one into nothing."""

    def sink(i: int) -> BinaryIO:
        return (folder / "attachment").open("wb") if i == index else Discard()

    with (folder / "raw").open("rb") as f:
        return _mapped(f, lambda source: parse_message(source, attachment_sink=sink))


def _in_memory(part: MimePart) -> Download:
    return Download(part.filename, part.content_type, len(part.content), content=part.content)


def _chosen_parts(
    file: BinaryIO, wanted: Callable[[MimePart], bool]
) -> list[tuple[MimePart, Download]]:
    """The parts of the message in ``file`` that ``wanted`` keeps, each decoded into a
    file of its own (in a worker thread); their files are the caller's."""
    files: dict[str, BinaryIO] = {}

    def into(part: MimePart) -> BinaryIO | None:
        if not wanted(part):
            return None
        files[part.part_id] = opened = tempfile.TemporaryFile()  # noqa: SIM115 (handed on)
        return opened

    file.flush()
    try:
        listed = _mapped(file, lambda source: mime_parts_into(source, into))
        chosen = []
        for part in listed.each():
            if (decoded := files.get(part.part_id)) is not None:
                size = decoded.tell()
                decoded.seek(0)
                chosen.append(
                    (part, Download(part.filename, part.content_type, size, file=decoded))
                )
    except BaseException:
        for opened in files.values():
            opened.close()
        raise
    return chosen


def _listed(file: BinaryIO) -> PartList:
    """:func:`mime_parts` of the message in ``file`` without contents (in a worker
    thread)."""
    file.flush()
    return _mapped(file, lambda source: mime_parts(source, contents=False))


def _mapped(file: BinaryIO, parse: Callable[[bytes | mmap.mmap], T]) -> T:
    """``parse`` of the message in ``file``, mapped into memory: its pages are the
    file's, read as the parse needs them, never a copy of it all."""
    if os.fstat(file.fileno()).st_size == 0:
        return parse(b"")  # (an empty file cannot be mapped)
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return parse(mapped)


@dataclass(frozen=True, slots=True)
class Download:
    """What a download sends: ``content`` in memory, or ``file`` (read from its start,
    closed by whoever sends it; its name is already gone)."""

    filename: str | None
    content_type: str
    size: int
    content: bytes = b""
    file: BinaryIO | None = None

    def close(self) -> None:
        """Close the file of a download not sent after all."""
        if self.file is not None:
            self.file.close()


#: a message larger than this is downloaded through a file (:meth:`Inbox.raw_download`)
STREAM_ABOVE = 1024 * 1024
#: octets read for a message's header block (:meth:`Inbox.header_block`)
HEAD = 256 * 1024
#: the end of a header block: an empty line (RFC 5322 §2.1)
_BLANK_LINE = re.compile(rb"(?:^|\n)\r?\n")


def _parsed_on_loop(raw: bytes) -> bool:
    return (
        len(raw) < _LOOP_PARSE_SIZE
        and raw.count(b"\n--") <= _LOOP_PARSE_BOUNDARIES
        and raw.count(b";") <= _LOOP_PARSE_SEMICOLONS
    )
