"""Parse raw RFC 5322 bytes into what the inbox shows: headers, text, html, attachments.

Capture keeps every message, however malformed, so parsing never raises and runs
in time linear in the message size (times the nesting bound). What could not be
parsed fully is reported in ``ParsedMessage.problems`` and stays in the raw source:

* at most ``MAX_HEADER_FIELDS`` top-level header fields are decoded;
* multiparts nest at most ``MAX_DEPTH`` levels; a deeper one is kept whole as one
  opaque attachment;
* at most ``MAX_PARTS`` parts are listed; later ones are left out;
* the email package reads a bounded part of each MIME field and of all of them
  (``mailgate.mime.budget``): a field's first 64 parameters, say.

Rules a mail client follows, and so does this parser:

* a ``message/rfc822`` (or ``message/global``) part is one attachment, downloadable
  as ``.eml``, never walked into; a message that *is* such a wrapper shows the
  embedded message's text, html and attachments;
* ``message/delivery-status`` and other leaves are one attachment each;
* a multipart whose boundary is missing or never used is read with the boundary
  its body does use, or else shown as text; it is never an attachment itself.

A message spooled to a file is parsed from an ``mmap`` of it with an
``AttachmentSink``: the tree holds bodies as spans of the file, and each
attachment is decoded a block at a time into a file of its own
(``mailgate.mime.stream``), so memory stays flat however large the attachments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import BinaryIO

from mailgate.mime.budget import FieldBudget
from mailgate.mime.decode import decode_8bit, decode_header, decode_text, safe_filename
from mailgate.mime.entity import Entity, Source, guess_boundary, read_entity, split_multipart
from mailgate.mime.stream import DECODED, Output, decode_into, decoded, transfer_encoding
from mailgate.mime.view import MimeView

__all__ = [
    "MAX_DEPTH",
    "MAX_HEADER_FIELDS",
    "MAX_PARTS",
    "AttachmentSink",
    "ParsedAttachment",
    "ParsedMessage",
    "parse_message",
]

HeaderValue = str | list[str]

MAX_DEPTH = 64  #: multipart nesting levels walked (real mail uses fewer than 10)
MAX_HEADER_FIELDS = 1000  #: top-level header fields decoded (real mail has under 200)
MAX_PARTS = 1000  #: MIME parts listed per message
_WRAPPERS = ("message/rfc822", "message/global")  # RFC 2046 §5.2.1, RFC 6532 §3.5
_EML_HEAD = 256 * 1024  #: bytes of a streamed forwarded message read for its Subject

#: Opens the file the decoded body of attachment ``index`` (its place in
#: ``ParsedMessage.attachments``) is written to. The file must be new, writable
#: and seekable; ``parse_message`` closes it once the attachment is written.
AttachmentSink = Callable[[int], BinaryIO]


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    filename: str | None  #: decoded, without control characters or directories
    content_type: str
    content: bytes  #: exact decoded bytes (for message/rfc822: the embedded message)
    cid: str | None
    inline: bool
    size: int  #: decoded bytes (with an attachment sink: its file's; ``content`` is then b"")


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    headers: dict[str, HeaderValue]  #: decoded; a header that repeats becomes a list
    subject: str
    sender: str
    to: str
    text: str | None
    html: str | None
    attachments: tuple[ParsedAttachment, ...]
    problems: tuple[str, ...] = ()  #: what could not be parsed fully; empty when all was


@dataclass(slots=True)
class _Part:
    """One node of the MIME tree: a leaf with where its body is, or a multipart with children."""

    view: EmailMessage  #: the MIME fields for the email API
    source: Source  #: the buffer a leaf's body lies in
    start: int = 0  #: a leaf's body is ``source[start:end]``
    end: int = 0
    children: list[_Part] | None = None
    content_type: str = ""
    #: the MIME fields as in the source, within the message's ``FieldBudget``
    mime: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Walk:
    problems: list[str] = field(default_factory=list)
    parts: int = 0
    fields: FieldBudget = field(default_factory=FieldBudget)


def parse_message(raw: Source, *, attachment_sink: AttachmentSink | None = None) -> ParsedMessage:
    """Parse leniently: mail from the wild is often malformed, and capture must keep it.

    Every leaf part that is not the chosen text or html body is an attachment, in
    document order; that order is the attachment's index in the API.

    With ``attachment_sink``, each attachment's body is decoded into the file the
    sink opens for it, never whole into memory, and ``ParsedAttachment.content`` is
    empty; ``raw`` is then best an ``mmap`` of the spooled message. The text and
    html shown are decoded into memory either way. An ``OSError`` from the sink's
    file is raised: the message was not lost to bad MIME but to a broken disk.
    """
    walk = _Walk()
    top = read_entity(raw, keep=MAX_HEADER_FIELDS)
    if top.field_count > MAX_HEADER_FIELDS:
        walk.problems.append(
            f"headers: {top.field_count} header fields; only the first {MAX_HEADER_FIELDS}"
            " are decoded, the rest are in the raw source"
        )
    headers = _headers(top.fields)
    try:
        text, html, attachments = _shown(top, walk, attachment_sink)
    except OSError:  # the sink's file could not be written: broken infrastructure
        raise
    except Exception as exc:  # a parser bug must not cost the message
        walk.problems.append(f"mime: body not parsed ({type(exc).__name__}); see the raw source")
        text, html, attachments = None, None, ()
    walk.problems.extend(walk.fields.problems())
    return ParsedMessage(
        headers=headers,
        subject=_first(headers, "Subject"),
        sender=_first(headers, "From"),
        to=_first(headers, "To"),
        text=text,
        html=html,
        attachments=attachments,
        problems=tuple(walk.problems),
    )


def _shown(
    top: Entity, walk: _Walk, sink: AttachmentSink | None
) -> tuple[str | None, str | None, tuple[ParsedAttachment, ...]]:
    """Text, html and attachments as a mail client shows them."""
    root = _unwrap(_tree(top, walk, depth=0, default="text/plain"), walk)
    text_part = _body(root, "plain")
    html_part = _body(root, "html")
    chosen = {id(p) for p in (text_part, html_part) if p is not None}
    leaves = (p for p in _leaves(root) if id(p) not in chosen)
    attachments = tuple(_attachment(p, index, sink) for index, p in enumerate(leaves))
    return _content(text_part), _content(html_part), attachments


def _headers(fields: list[tuple[str, str]]) -> dict[str, HeaderValue]:
    """One pass: repeated fields (matched case-insensitively) become one list."""
    grouped: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for name, value in fields:
        key = spelling.setdefault(name.lower(), name)
        grouped.setdefault(key, []).append(decode_header(value))
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


def _first(headers: dict[str, HeaderValue], name: str) -> str:
    """The first value of a header, looked up case-insensitively (already decoded)."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value if isinstance(value, str) else value[0]
    return ""


def _view(mime: dict[str, str], default: str) -> EmailMessage:
    """An EmailMessage holding only the MIME fields: the email API's parameter
    decoding (RFC 2231, quoted strings) without scanning every header field."""
    view = MimeView()
    view.set_default_type(default)
    for name, value in mime.items():
        view.set_raw(name.title(), value)
    return view


def _tree(entity: Entity, walk: _Walk, *, depth: int, default: str) -> _Part:
    mime = walk.fields.bounded(entity.mime)
    view = _view(mime, default)
    content_type = view.get_content_type()
    source, start, end = entity.source, entity.body_start, entity.end
    if view.get_content_maintype() != "multipart":
        return _Part(view, source, start, end, None, content_type, mime)
    if depth >= MAX_DEPTH:
        walk.problems.append(
            f"mime: multipart nested deeper than {MAX_DEPTH} levels;"
            " the deeper part is kept whole as one attachment"
        )
        mime = {"content-type": "application/octet-stream"}
        return _leaf(mime, default, source, entity.start, end)
    split = _split(entity, view.get_boundary(), content_type, walk)
    if split is None:
        return _leaf(_as_text(view), default, source, start, end)
    child_default = "message/rfc822" if content_type == "multipart/digest" else "text/plain"
    children = []
    for part_start, part_end in split:
        walk.parts += 1
        if walk.parts > MAX_PARTS:
            walk.problems.append(f"mime: more than {MAX_PARTS} parts; the rest are not listed")
            break
        part = read_entity(source, start=part_start, end=part_end)
        children.append(_tree(part, walk, depth=depth + 1, default=child_default))
    return _Part(view, source, children=children, content_type=content_type)


def _leaf(mime: dict[str, str], default: str, source: Source, start: int, end: int) -> _Part:
    view = _view(mime, default)
    return _Part(view, source, start, end, None, view.get_content_type(), mime)


def _split(
    entity: Entity, boundary: str | None, content_type: str, walk: _Walk
) -> list[tuple[int, int]] | None:
    """The parts of a multipart body as spans; None when it has no usable boundary at all."""
    source, start, end = entity.source, entity.body_start, entity.end
    found = split_multipart(source, boundary, start, end) if boundary else None
    if found is None:
        guessed = guess_boundary(source, start, end)
        found = split_multipart(source, guessed, start, end) if guessed else None
        if found is None or guessed is None:
            walk.problems.append(f"mime: {content_type} without a usable boundary; shown as text")
            return None
        shown = guessed.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        walk.problems.append(f"mime: {content_type} boundary missing or unused; read as {shown}")
    parts, closed = found
    if not closed:
        walk.problems.append(f"mime: {content_type} has no closing boundary (truncated?)")
    return parts


def _as_text(view: EmailMessage) -> dict[str, str]:
    """A boundary-less multipart is shown as its text, in the charset it declares."""
    charset = view.get_param("charset")
    content_type = f'text/plain; charset="{charset}"' if isinstance(charset, str) else "text/plain"
    return {"content-type": content_type}


def _unwrap(root: _Part, walk: _Walk) -> _Part:
    """A message that *is* a message/rfc822 wrapper shows the message it wraps.

    A wrapper sent as it is (7bit, 8bit, binary) is read where it lies; one
    encoded in base64 or quoted-printable, which RFC 2046 §5.2.1 forbids and
    only odd mailers write, is decoded into memory first.
    """
    depth = 0
    while root.children is None and root.content_type in _WRAPPERS and depth < MAX_DEPTH:
        source, start, end = root.source, root.start, root.end
        if _encoding(root) in DECODED:
            inner = _decoded(root)
            source, start, end = inner, 0, len(inner)
        entity = read_entity(source, start=start, end=end)
        root = _tree(entity, walk, depth=depth + 1, default="text/plain")
        depth += 1
    return root


def _body(part: _Part | None, subtype: str) -> _Part | None:
    """The first text/``subtype`` part a reader sees (``EmailMessage.get_body`` rules).

    Attachments are never bodies; in multipart/related only the root part counts
    (RFC 2387 §3.2: the ``start`` parameter, else the first part).
    """
    if part is None or part.view.is_attachment():
        return None
    if part.children is None:
        return part if part.content_type == f"text/{subtype}" else None
    candidates = part.children
    if part.content_type == "multipart/related":
        candidates = [_related_root(part)] if part.children else []
    for child in candidates:
        found = _body(child, subtype)
        if found is not None:
            return found
    return None


def _related_root(part: _Part) -> _Part:
    assert part.children
    start = part.view.get_param("start")
    if isinstance(start, str):
        for child in part.children:
            if str(child.view.get("content-id", "")).strip() == start.strip():
                return child
    return part.children[0]


def _leaves(part: _Part) -> Iterator[_Part]:
    if part.children is None:
        yield part
        return
    for child in part.children:
        yield from _leaves(child)


def _encoding(part: _Part) -> str:
    return transfer_encoding(part.view)


def _decoded(part: _Part) -> bytes:
    """A leaf's body decoded into memory."""
    return decoded(part.source, part.start, part.end, part.view)


def _content(part: _Part | None) -> str | None:
    if part is None:
        return None
    return decode_text(_decoded(part), part.view.get_content_charset())


def _attachment(part: _Part, index: int, sink: AttachmentSink | None) -> ParsedAttachment:
    view = part.view
    filename = _filename(part)
    named_by_subject = filename is None and part.content_type in _WRAPPERS
    if sink is None:
        content = _decoded(part)
        size, head = len(content), content
    else:
        content, size, head = b"", *_stream(part, sink(index), named_by_subject)
    if named_by_subject:
        filename = _eml_name(head)
    cid = view.get("content-id")
    return ParsedAttachment(
        filename=filename,
        content_type=part.content_type,
        content=content,
        cid=str(cid).strip().strip("<>") if cid else None,
        inline=view.get_content_disposition() == "inline",
        size=size,
    )


def _stream(part: _Part, file: BinaryIO, keep_head: bool) -> tuple[int, bytes]:
    """Decode a leaf's body into ``file`` (closed after); its size and, when asked,
    its first bytes (a forwarded message's header block, for its Subject)."""
    with file:
        out = Output(file, head=_EML_HEAD if keep_head else 0)
        decode_into(part.source, part.start, part.end, _encoding(part), out)
    return out.size, bytes(out.head)


def _filename(part: _Part) -> str | None:
    """The part's filename; raw 8-bit bytes in it are read as UTF-8, else latin-1
    (the email API would read invalid UTF-8 as U+FFFD). Fields without such bytes are
    read from the part's own view: a long one it keeps is not parsed again."""
    fields = {k: decode_8bit(v) for k, v in part.mime.items() if k != "content-transfer-encoding"}
    if all(part.mime[k] is v for k, v in fields.items()):
        return safe_filename(part.view.get_filename())
    return safe_filename(_view(fields, "text/plain").get_filename())


def _eml_name(message: bytes) -> str:
    """``<subject>.eml`` for a forwarded message without a filename, as clients save it.

    Streamed, only the first ``_EML_HEAD`` bytes are read: a Subject further down
    a longer header block is not found.
    """
    for name, value in read_entity(message, keep=MAX_HEADER_FIELDS).fields:
        if name.lower() == "subject":
            subject = safe_filename(decode_header(value))
            if subject:
                return f"{subject[:200]}.eml"
            break
    return "forwarded.eml"
