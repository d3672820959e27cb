"""Split raw MIME bytes into entities: header fields, body, multipart parts. No recursion.

The standard library's parser builds the whole tree at once with one nested
generator per multipart level (2,000 levels raise ``RecursionError``) and looks
headers up by scanning every field (40,000 fields make that quadratic). These
functions do one linear pass per entity and leave the walking, and its depth
bound, to the caller.

They work on offsets into one buffer, ``bytes`` or an ``mmap`` of a spooled
message, and slice only header lines: a body is a ``(start, end)`` span, so a
20 MB attachment is never copied just to find where it ends.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass, field

__all__ = ["MIME_FIELDS", "Entity", "Source", "guess_boundary", "read_entity", "split_multipart"]

#: What a message is read from: its bytes, or an ``mmap`` of the file it was spooled to.
Source = bytes | mmap.mmap

#: The fields that decide how an entity is shown (RFC 2045 §3, RFC 2183, RFC 2392).
MIME_FIELDS = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
)

# RFC 5322 §2.2: a field name is printable US-ASCII except ":"; §4.5 (obsolete
# syntax) allows white space before the colon.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# RFC 2046 §5.1.1: boundaries are 1-70 characters; take the first delimiter-like line.
_DELIMITER_LIKE = re.compile(rb"^--([^\s]{1,70}?)(--)?[ \t]*\r?$", re.MULTILINE)
# What may follow "--boundary" on a delimiter line: "--" to close, transport padding.
_DELIMITER_REST = re.compile(rb"(--)?[ \t]*\r*(?:\n|\Z)")


@dataclass(slots=True)
class Entity:
    """One MIME entity: its header fields (as in the source) and where its body is."""

    source: Source  #: the buffer the entity lies in
    start: int  #: where the entity (its header block) starts in ``source``
    body_start: int
    end: int  #: where the entity ends (exclusive)
    fields: list[tuple[str, str]] = field(default_factory=list)  #: the first ``keep`` fields
    mime: dict[str, str] = field(default_factory=dict)  #: first of each MIME_FIELDS, lower-case
    field_count: int = 0  #: every field in the header block, kept or not

    @property
    def body(self) -> bytes:
        """The body, copied out of the source (for callers that want it whole)."""
        return self.source[self.body_start : self.end]


def read_entity(raw: Source, *, keep: int = 0, start: int = 0, end: int | None = None) -> Entity:
    """Read the header block of ``raw[start:end]`` in one pass; values stay as in the source.

    Values are ASCII with undecodable bytes as surrogate escapes (as the standard
    library's ``BytesParser`` keeps them), folding included. Only the first ``keep``
    fields are kept in ``fields``; the MIME fields are always found, wherever they are.
    A line that is neither a field nor a continuation ends the header block, as in
    the standard parser (the message then has no blank separator line); it is
    matched in place, so a body line is never copied.
    """
    end = len(raw) if end is None else end
    entity = Entity(raw, start, start, end)
    name: str | None = None
    value: list[bytes] = []
    pos = start
    while pos < end:
        newline = raw.find(b"\n", pos, end)
        line_end = end if newline < 0 else newline + 1
        first = raw[pos : pos + 1]
        if first == b"\n" or raw[pos : pos + 2] == b"\r\n":
            pos = line_end
            break
        if first in (b" ", b"\t"):
            if name is not None:
                value.append(raw[pos:line_end])
            pos = line_end
            continue
        match = _FIELD.match(raw, pos, line_end)
        if match is None:
            if pos == start and raw[pos : pos + 5] == b"From ":  # an mbox separator line
                pos = line_end
                continue
            break
        if name is not None:
            _add(entity, name, value, keep)
        name = match.group(1).decode("ascii")
        value = [raw[match.end() : line_end]]
        pos = line_end
    if name is not None:
        _add(entity, name, value, keep)
    entity.body_start = pos
    return entity


def _add(entity: Entity, name: str, value: list[bytes], keep: int) -> None:
    text = b"".join(value).lstrip(b" \t").rstrip(b"\r\n").decode("ascii", "surrogateescape")
    entity.field_count += 1
    if entity.field_count <= keep:
        entity.fields.append((name, text))
    lower = name.lower()
    if lower in MIME_FIELDS:
        entity.mime.setdefault(lower, text)


def split_multipart(
    raw: Source, boundary: str, start: int = 0, end: int | None = None
) -> tuple[list[tuple[int, int]], bool] | None:
    """The parts between the delimiter lines of ``boundary`` in the body ``raw[start:end]``
    (RFC 2046 §5.1.1), as ``(start, end)`` spans of ``raw``.

    Returns the spans and whether the close delimiter was seen, or None when the
    boundary never occurs. The line break before a delimiter belongs to the
    delimiter; the preamble and the epilogue are dropped, as mail clients do.
    """
    end = len(raw) if end is None else end
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while (found := raw.find(delimiter, pos, end)) >= 0:  # find: no per-line loop
        pos = found + 1
        if found > start and raw[found - 1] != 0x0A:  # not at a line start
            continue
        rest = _DELIMITER_REST.match(raw, found + len(delimiter), end)
        if rest is None:
            continue
        if part_start is not None:
            parts.append((part_start, _before_line_break(raw, part_start, found)))
        if rest.group(1):  # the close delimiter
            return parts, True
        part_start = pos = rest.end()
    if part_start is None:
        return None
    parts.append((part_start, end))
    return parts, False


def _before_line_break(raw: Source, start: int, end: int) -> int:
    """``end`` less the line break that ends ``raw[start:end]``, if any."""
    if end - start >= 2 and raw[end - 2 : end] == b"\r\n":
        return end - 2
    return end - 1 if end > start and raw[end - 1] == 0x0A else end


def guess_boundary(raw: Source, start: int = 0, end: int | None = None) -> str | None:
    """A boundary for a multipart whose declared one is missing or never used.

    Mail clients recover such mail by taking the first delimiter-like line
    (``--token``) of the body ``raw[start:end]`` that is followed by a header
    field or a blank line. ``start`` must be at a line start.
    """
    end = len(raw) if end is None else end
    for match in _DELIMITER_LIKE.finditer(raw, start, end):
        newline = raw.find(b"\n", match.end(), end)
        following = b"" if newline < 0 else raw[newline + 1 : min(newline + 200, end)]
        if following[:1] in (b"\r", b"\n") or _FIELD.match(following):
            return match.group(1).decode("ascii", "surrogateescape")
    return None
