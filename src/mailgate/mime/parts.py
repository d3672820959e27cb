"""A message's MIME parts numbered and sorted as Mailpit shows them. No I/O.

Mailpit parses with Go's enmime, and its API names a part by enmime's ``PartID``
(``/api/v1/message/{id}/part/{PartID}``): clients read the ID from ``Attachments`` or
``Inline`` and ask for it back, so the numbering must be enmime's own:

* the root entity is ``0``; the parts of a root multipart are ``1``, ``2``, …;
* the parts of a nested multipart numbered ``N`` are ``N.1``, ``N.2``, … (the nested
  multipart itself then becomes ``N.0``, and is never listed);
* a ``message/rfc822`` part is one leaf: it is not walked into.

And sorted as enmime sorts them (breadth first, each list in tree order):

* **attachments**: ``Content-Disposition: attachment``, or ``application/octet-stream``;
* **inlines**: ``Content-Disposition: inline``;
* **others**: no disposition, neither text/plain nor text/html nor octet-stream.

The email package reads each part's MIME fields within the message's budget
(``mailgate.mime.budget``), as ``parse_message`` does: the same cuts, which capture
records as the message's problems.

A message that is not multipart is an attachment itself (``0``) when it is neither
text/plain nor text/html or is marked as an attachment. Mailpit lists only the parts
with a file name or a Content-ID (the file name falling back to the Content-ID), its
``Inline`` being the inlines followed by the others.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, BinaryIO

from mailgate.mime.budget import FieldBudget
from mailgate.mime.decode import decode_8bit, safe_filename
from mailgate.mime.entity import Entity, Source, read_entity, split_multipart
from mailgate.mime.stream import (
    REFERENCE_SIZE,
    Discard,
    Output,
    decode_into,
    decoded,
    transfer_encoding,
)
from mailgate.mime.view import MimeView

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["MimePart", "PartList", "cid_references", "digests", "mime_parts", "mime_parts_into"]

MAX_DEPTH = 64  #: multipart levels walked, as ``mailgate.mime.parse``
MAX_PARTS = 1000  #: parts numbered per message


@dataclass(frozen=True, slots=True)
class MimePart:
    part_id: str
    content_type: str
    disposition: str  #: "attachment", "inline" or "" (none)
    filename: str  #: the file name, else the Content-ID (Mailpit's ``FileName``)
    content_id: str
    #: decoded (base64, quoted-printable); the source bytes otherwise; empty when listed
    #: without contents or decoded into a file (:func:`mime_parts_into`)
    content: bytes
    #: without contents (:func:`mime_parts`): the decoded size, and its MD5, SHA-1 and
    #: SHA-256 in hex, as Mailpit lists them; None with them (computed from ``content``)
    #: and from :func:`mime_parts_into`
    digests: tuple[int, str, str, str] | None = None


@dataclass(frozen=True, slots=True)
class PartList:
    """The listed parts: what Mailpit's ``Attachments`` and ``Inline`` hold."""

    attachments: tuple[MimePart, ...] = ()
    inline: tuple[MimePart, ...] = ()  #: the inlines, then the other named parts

    def find(self, part_id: str) -> MimePart | None:
        """The part Mailpit serves for ``part_id`` (inlines first, as it looks them up)."""
        for part in self.each():
            if part.part_id == part_id:
                return part
        return None

    def each(self) -> tuple[MimePart, ...]:
        """Every listed part once, in the order :meth:`find` looks them up (an inline
        ``application/octet-stream`` part is both an attachment and an inline)."""
        seen: dict[str, MimePart] = {}
        for part in (*self.inline, *self.attachments):
            seen.setdefault(part.part_id, part)
        return tuple(seen.values())


class _Body(enum.Enum):
    """What becomes of each part's body while the parts are numbered."""

    CONTENTS = enum.auto()  #: decoded into :attr:`MimePart.content`
    DIGESTS = enum.auto()  #: decoded into :attr:`MimePart.digests`, a block at a time
    NONE = enum.auto()  #: left in the source (:func:`mime_parts_into` decodes some)


@dataclass(slots=True)
class _Node:
    part: MimePart
    entity: Entity
    view: EmailMessage
    children: list[_Node] = field(default_factory=list)
    multipart: bool = False


def mime_parts(raw: Source, *, contents: bool = True) -> PartList:
    """Mailpit's ``Attachments`` and ``Inline`` of ``raw`` (never raises on bad MIME).

    Without ``contents`` each part's body is decoded a block at a time into its digests
    (:attr:`MimePart.digests`), never held: what Mailpit's message view lists of a big
    message, which is then best an ``mmap`` of it."""
    listed, _ = _listed(raw, _Body.CONTENTS if contents else _Body.DIGESTS)
    return listed


def mime_parts_into(raw: Source, into: Callable[[MimePart], BinaryIO | None]) -> PartList:
    """:func:`mime_parts` numbered the same, with no part decoded (``content`` empty,
    ``digests`` None) but those ``into`` gives a file for, each decoded into its file a
    block at a time, the same bytes as its ``content``: one part of a big message
    (Mailpit's part download, the UI's inline images), the message best an ``mmap``.
    ``into`` is asked once per listed part (:meth:`PartList.each`); the files stay its."""
    listed, nodes = _listed(raw, _Body.NONE)
    for part in listed.each():
        file = into(part)
        if file is not None:
            node = nodes[part.part_id]
            _body_into(node.entity, node.view, file)
    return listed


def _listed(raw: Source, body: _Body) -> tuple[PartList, dict[str, _Node]]:
    """The listed parts, and every numbered node by its part id."""
    walk = _Walk()
    root = _walk(read_entity(raw), "0", depth=0, walk=walk, root=True, body=body)
    if not root.multipart:
        return _single(root.part), {"0": root}
    nodes = _breadth_first(root)
    attachments = [n.part for n in nodes if _is_attachment(n)]
    inlines = [n.part for n in nodes if n.part.disposition == "inline" and not n.multipart]
    others = [n.part for n in nodes if _is_other(n)]
    listed = PartList(
        attachments=tuple(p for p in attachments if p.filename),
        inline=tuple(p for p in (*inlines, *others) if p.filename),
    )
    return listed, {n.part.part_id: n for n in nodes}


def _single(part: MimePart) -> PartList:
    text = part.content_type in ("", "text/plain", "text/html")
    if (text and part.disposition != "attachment") or not part.filename:
        return PartList()
    if part.disposition == "inline":
        return PartList(inline=(part,))
    return PartList(attachments=(part,))


def _is_attachment(node: _Node) -> bool:
    part = node.part
    return part.disposition == "attachment" or part.content_type == "application/octet-stream"


def _is_other(node: _Node) -> bool:
    part = node.part
    if node.multipart or part.disposition or part.content_type == "application/octet-stream":
        return False
    return part.content_type not in ("text/plain", "text/html")


def _breadth_first(root: _Node) -> list[_Node]:
    found, queue = [], deque([root])
    while queue:
        node = queue.popleft()
        found.append(node)
        queue.extend(node.children)
    return found


@dataclass(slots=True)
class _Walk:
    parts: int = 0  #: parts numbered so far
    #: what the email package may still read of the MIME fields, as ``parse_message``
    #: reads them (its problems are recorded at capture)
    fields: FieldBudget = field(default_factory=FieldBudget)


def _walk(
    entity: Entity, part_id: str, *, depth: int, walk: _Walk, root: bool, body: _Body
) -> _Node:
    view = _view(walk.fields.bounded(entity.mime))
    boundary = view.get_boundary()
    parts = None
    if view.get_content_maintype() == "multipart" and boundary and depth < MAX_DEPTH:
        split = split_multipart(entity.source, boundary, entity.body_start, entity.end)
        parts = split[0] if split is not None else None
    if parts is None:
        return _Node(_leaf(entity, view, part_id, body), entity, view)
    node = _Node(_leaf(entity, view, part_id, body), entity, view, multipart=True)
    for index, (start, end) in enumerate(parts, start=1):
        walk.parts += 1
        if walk.parts > MAX_PARTS:
            break
        child_id = str(index) if root else f"{part_id}.{index}"
        node.children.append(
            _walk(
                read_entity(entity.source, start=start, end=end),
                child_id,
                depth=depth + 1,
                walk=walk,
                root=False,
                body=body,
            )
        )
    return node


def _view(mime: dict[str, str]) -> EmailMessage:
    """The MIME fields alone, for the email package's parameter decoding (RFC 2231)."""
    view = MimeView()
    for name, value in mime.items():
        view.set_raw(
            name.title(), decode_8bit(value) if name != "content-transfer-encoding" else value
        )
    return view


def _leaf(entity: Entity, view: EmailMessage, part_id: str, body: _Body) -> MimePart:
    cid = str(view.get("content-id", "") or "").strip().strip("<>").strip()
    disposition = view.get_content_disposition() or ""
    filename = safe_filename(view.get_filename()) or cid
    return MimePart(
        part_id=part_id,
        content_type=view.get_content_type() if "content-type" in entity.mime else "",
        disposition=disposition,
        filename=filename,
        content_id=cid,
        content=_decoded(entity, view) if body is _Body.CONTENTS else b"",
        digests=_digested(entity, view) if body is _Body.DIGESTS else None,
    )


def _decoded(entity: Entity, view: EmailMessage) -> bytes:
    if view.get_content_maintype() == "multipart":
        return b""
    return decoded(entity.source, entity.body_start, entity.end, view)


def _digested(entity: Entity, view: EmailMessage) -> tuple[int, str, str, str]:
    """:func:`digests` of :func:`_decoded`, never held (:func:`_body_into`)."""
    sink = _Hashing()
    _body_into(entity, view, sink)
    return sink.digests()


def _body_into(entity: Entity, view: EmailMessage, file: BinaryIO) -> None:
    """Write :func:`_decoded` into ``file``: a big body decoded a block at a time, a
    small one in memory as the email package decodes it."""
    start, end = entity.body_start, entity.end
    if view.get_content_maintype() == "multipart" or end - start <= REFERENCE_SIZE:
        file.write(_decoded(entity, view))
        return
    decode_into(entity.source, start, end, transfer_encoding(view), Output(file))


def cid_references(content_ids: Iterable[str]) -> re.Pattern[str]:
    """The ``cid:`` URLs (RFC 2392) of ``content_ids`` in HTML, found in one pass; of
    ``cid:a`` and ``cid:ab``, the one given first is matched first (a part's in turn,
    as Mailpit replaces them). A match's text after ``cid:`` is its Content-ID."""
    return re.compile("|".join(re.escape(f"cid:{cid}") for cid in content_ids))


def digests(content: bytes) -> tuple[int, str, str, str]:
    """The size of ``content`` and its MD5, SHA-1 and SHA-256 in hex (Mailpit's
    ``Size`` and ``Checksums``)."""
    return (
        len(content),
        hashlib.md5(content, usedforsecurity=False).hexdigest(),
        hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        hashlib.sha256(content).hexdigest(),
    )


class _Hashing(Discard):
    """A file that keeps only the digests of what is written to it; a body written again
    from its start (:meth:`Output.restart`) starts them again."""

    def __init__(self) -> None:
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha1 = hashlib.sha1(usedforsecurity=False)
        self._sha256 = hashlib.sha256()

    def write(self, data: ReadableBuffer, /) -> int:
        for hashed in (self._md5, self._sha1, self._sha256):
            hashed.update(data)
        return super().write(data)

    def truncate(self, size: int | None = None, /) -> int:
        self._reset()
        return super().truncate(size)

    def digests(self) -> tuple[int, str, str, str]:
        return (
            self.tell(),
            self._md5.hexdigest(),
            self._sha1.hexdigest(),
            self._sha256.hexdigest(),
        )
