"""Split raw MIME bytes into entities: header fields, body, multipart parts. No recursion.

The standard library's parser builds the whole tree at once with one nested
generator per multipart level (2,000 levels raise ``RecursionError``) and looks
headers up by scanning every field (40,000 fields make that quadratic). These
functions do one linear pass per entity and leave the walking, and its depth
bound, to the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MIME_FIELDS", "Entity", "guess_boundary", "read_entity", "split_multipart"]

#: The fields that decide how an entity is shown (RFC 2045 §3, RFC 2183, RFC 2392).
MIME_FIELDS = frozenset(
    {"content-type", "content-disposition", "content-transfer-encoding", "content-id"}
)

# RFC 5322 §2.2: a field name is printable US-ASCII except ":"; §4.5 (obsolete
# syntax) allows white space before the colon.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# RFC 2046 §5.1.1: boundaries are 1-70 characters; take the first delimiter-like line.
_DELIMITER_LIKE = re.compile(rb"^--([^\s]{1,70}?)(--)?[ \t]*\r?$", re.MULTILINE)


@dataclass(slots=True)
class Entity:
    """One MIME entity: its header fields (as in the source) and its body bytes."""

    raw: bytes  #: the whole entity, headers and body
    body: bytes
    fields: list[tuple[str, str]] = field(default_factory=list)  #: the first ``keep`` fields
    mime: dict[str, str] = field(default_factory=dict)  #: first of each MIME_FIELDS, lower-case
    field_count: int = 0  #: every field in the header block, kept or not


def read_entity(raw: bytes, *, keep: int = 0) -> Entity:
    """Read the header block of ``raw`` in one pass; values stay as in the source.

    Values are ASCII with undecodable bytes as surrogate escapes (as the standard
    library's ``BytesParser`` keeps them), folding included. Only the first ``keep``
    fields are kept in ``fields``; the MIME fields are always found, wherever they are.
    A line that is neither a field nor a continuation ends the header block, as in
    the standard parser (the message then has no blank separator line).
    """
    entity = Entity(raw=raw, body=b"")
    name: str | None = None
    value: list[bytes] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            pos = end
            break
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(line)
            pos = end
            continue
        match = _FIELD.match(line)
        if match is None:
            if pos == 0 and line.startswith(b"From "):  # an mbox separator line
                pos = end
                continue
            break
        if name is not None:
            _add(entity, name, value, keep)
        name = match.group(1).decode("ascii")
        value = [line[match.end() :]]
        pos = end
    if name is not None:
        _add(entity, name, value, keep)
    entity.body = raw[pos:]
    return entity


def _add(entity: Entity, name: str, value: list[bytes], keep: int) -> None:
    text = b"".join(value).lstrip(b" \t").rstrip(b"\r\n").decode("ascii", "surrogateescape")
    entity.field_count += 1
    if entity.field_count <= keep:
        entity.fields.append((name, text))
    lower = name.lower()
    if lower in MIME_FIELDS:
        entity.mime.setdefault(lower, text)


def split_multipart(body: bytes, boundary: str) -> tuple[list[bytes], bool] | None:
    """The parts between the delimiter lines of ``boundary`` (RFC 2046 §5.1.1).

    Returns the parts and whether the close delimiter was seen, or None when the
    boundary never occurs. The line break before a delimiter belongs to the
    delimiter; the preamble and the epilogue are dropped, as mail clients do.
    """
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while (found := body.find(delimiter, pos)) >= 0:  # bytes.find: no per-line loop
        pos = found + 1
        if found and body[found - 1] != 0x0A:  # not at a line start
            continue
        closing = _delimiter_line(body, found + len(delimiter))
        if closing is None:
            continue
        if start is not None:
            parts.append(_strip_line_break(body[start:found]))
        if closing:
            return parts, True
        newline = body.find(b"\n", found)
        start = pos = len(body) if newline < 0 else newline + 1
    if start is None:
        return None
    parts.append(body[start:])
    return parts, False


def _delimiter_line(body: bytes, after: int) -> bool | None:
    """What follows ``--boundary`` on its line: True for "--" (close), False for
    nothing but transport padding, None when the line is something else."""
    newline = body.find(b"\n", after)
    rest = body[after : len(body) if newline < 0 else newline].rstrip(b"\r")
    closing = rest.startswith(b"--")
    if rest[2 if closing else 0 :].strip(b" \t"):
        return None
    return closing


def _strip_line_break(part: bytes) -> bytes:
    if part.endswith(b"\r\n"):
        return part[:-2]
    return part[:-1] if part.endswith(b"\n") else part


def guess_boundary(body: bytes) -> str | None:
    """A boundary for a multipart whose declared one is missing or never used.

    Mail clients recover such mail by taking the first delimiter-like line
    (``--token``) that is followed by a header field or a blank line.
    """
    for match in _DELIMITER_LIKE.finditer(body):
        newline = body.find(b"\n", match.end())
        following = b"" if newline < 0 else body[newline + 1 : newline + 200]
        if following[:1] in (b"\r", b"\n") or _FIELD.match(following):
            return match.group(1).decode("ascii", "surrogateescape")
    return None
