"""Mailpit's search syntax, parsed into terms; the store turns them into one WHERE.

A pure core: text in, :class:`Term` values out (the store's ``InboxStore.list`` and
``clear`` take them). The syntax is Mailpit's (its "search filters" page and
``internal/storage/search.go``):

* words match the subject, the addresses (From, To, Cc, Bcc, the envelope) and the
  text and HTML bodies; ``"quoted phrases"`` match as one string; every term must
  match (AND); case is ignored (for non-ASCII letters only on PostgreSQL);
* ``from:`` ``to:`` ``cc:`` ``bcc:`` ``reply-to:`` ``addressed:`` ``subject:``
  ``message-id:`` ``tag:`` take a word or a quoted phrase (``to:"Jane Doe"``);
  unlike Mailpit's, ``from:`` also matches the envelope sender and ``to:`` Cc, Bcc and
  the envelope recipients, so a Bcc-only recipient is found;
* ``is:read`` ``is:unread`` ``is:tagged`` ``has:attachment`` ``has:inline``;
* ``before:`` ``after:`` a date (``2024-04-01``, ``2024/04/01``, ``04/01/2024`` read as
  US month/day like Mailpit, ``"2024-04-01 10:30"``, ISO 8601 with a zone, an RFC 5322
  date, a Unix time), in ``tz`` unless it names its own zone;
  ``larger:`` ``smaller:`` a size (``2kb``, ``1.5m``, bytes);
* ``-`` or ``!`` before any term negates it.

Where Mailpit silently ignores a date or size it cannot read, this raises
:class:`~mailgate.errors.InvalidInput`: ``DELETE ?q=before:garbage`` must not become
"delete everything". ``%`` and ``_`` are matched literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum

from mailgate.errors import InvalidInput
from mailgate.inbox.sorting import clean_tag

__all__ = ["Field", "Term", "parse_query"]


class Field(StrEnum):
    """What a term matches."""

    TEXT = "text"  #: a word or phrase: subject, addresses, bodies
    FROM = "from"  #: the From header or the envelope sender
    TO = "to"  #: To, Cc, Bcc or an envelope recipient
    CC = "cc"  #: the Cc header
    BCC = "bcc"  #: the Bcc header (kept when the client sent one) or a Bcc-only recipient
    REPLY_TO = "reply-to"  #: the Reply-To header
    ADDRESSED = "addressed"  #: any of the address fields above
    SUBJECT = "subject"  #: the decoded subject
    MESSAGE_ID = "message-id"  #: the Message-ID, without angle brackets
    TAG = "tag"  #: one of its tags, the whole name (ignoring case)
    READ = "is:read"  #: read (``is:unread`` is this negated)
    TAGGED = "is:tagged"  #: has a tag
    ATTACHMENT = "has:attachment"  #: a part that is not shown inline
    INLINE = "has:inline"  #: an inline part (a logo in HTML)
    BEFORE = "before"  #: captured at or before an instant
    AFTER = "after"  #: captured at or after an instant
    LARGER = "larger"  #: size in bytes above
    SMALLER = "smaller"  #: size in bytes below


@dataclass(frozen=True, slots=True)
class Term:
    """One condition; a query matches what every one of its terms matches."""

    field: Field
    #: the text to find; an instant for BEFORE/AFTER; bytes for LARGER/SMALLER
    value: str | datetime | int = ""
    negated: bool = False


_TEXT_PREFIXES = {
    f.value: f
    for f in (Field.FROM, Field.TO, Field.CC, Field.BCC, Field.REPLY_TO, Field.ADDRESSED,
              Field.SUBJECT, Field.MESSAGE_ID, Field.TAG)
}  # fmt: skip
_FLAGS = {
    "is:read": (Field.READ, False),
    "is:unread": (Field.READ, True),
    "is:tagged": (Field.TAGGED, False),
    "has:attachment": (Field.ATTACHMENT, False),
    "has:attachments": (Field.ATTACHMENT, False),
    "has:inline": (Field.INLINE, False),
    "has:inlines": (Field.INLINE, False),
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s?(k|kb|m|mb)?", re.IGNORECASE)
_DATE_FORMATS = (
    "%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M",
    "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y",
)  # fmt: skip


def parse_query(text: str, *, tz: tzinfo = UTC) -> tuple[Term, ...]:
    """The terms of a search; an empty tuple matches everything."""
    terms = (_term(segments, tz) for segments in _tokens(text))
    return tuple(t for t in terms if t is not None)


def _tokens(text: str) -> list[list[tuple[str, bool]]]:
    """Whitespace-separated tokens, each as its (text, was quoted) segments; a quote
    left open runs to the end."""
    tokens: list[list[tuple[str, bool]]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        segments: list[tuple[str, bool]] = []
        while i < n and not text[i].isspace():
            if text[i] == '"':
                end = text.find('"', i + 1)
                end = n if end < 0 else end
                segments.append((text[i + 1 : end], True))
                i = end + 1
            else:
                start = i
                while i < n and not text[i].isspace() and text[i] != '"':
                    i += 1
                segments.append((text[start:i], False))
        tokens.append(segments)
    return tokens


def _term(segments: list[tuple[str, bool]], tz: tzinfo) -> Term | None:
    negated = False
    first, quoted = segments[0]
    if not quoted and first[:1] in ("-", "!") and (len(first) > 1 or len(segments) > 1):
        negated = True
        segments = [(first[1:], False), *segments[1:]] if len(first) > 1 else segments[1:]
        first, quoted = segments[0]
    whole = "".join(text for text, _ in segments)
    if quoted:  # "is:read" in quotes is a phrase, not a filter
        return Term(Field.TEXT, whole, negated) if whole.strip() else None
    if (flag := _FLAGS.get(whole.lower())) is not None:
        field, flipped = flag
        return Term(field, "", negated != flipped)
    prefix, colon, value = whole.partition(":")
    value = value.strip()
    key = prefix.lower()
    if colon and key in _TEXT_PREFIXES:
        return _text_term(_TEXT_PREFIXES[key], value, negated)
    if colon and key in ("before", "after"):
        field = Field.BEFORE if key == "before" else Field.AFTER
        return Term(field, parse_date(value, tz), negated) if value else None
    if colon and key in ("larger", "smaller"):
        field = Field.LARGER if key == "larger" else Field.SMALLER
        return Term(field, parse_size(value), negated) if value else None
    return Term(Field.TEXT, whole, negated) if whole.strip() else None


def _text_term(field: Field, value: str, negated: bool) -> Term | None:
    if field is Field.MESSAGE_ID:
        value = value.strip("<>")
    elif field is Field.TAG:
        value = clean_tag(value)
    return Term(field, value, negated) if value else None


def parse_date(text: str, tz: tzinfo = UTC) -> datetime:
    """An instant from the date forms listed in the module docstring; naive ones in ``tz``."""
    text = text.strip()
    if text.isdigit():
        return _unix_time(text)
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz)
        except ValueError:
            continue
    when = _iso_or_rfc5322(text)
    if when is None:
        raise InvalidInput(
            f"search: cannot read the date {text!r}; write it as YYYY-MM-DD"
            ' (quote a date with a time: before:"2024-04-01 10:30")'
        )
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def _unix_time(text: str) -> datetime:
    """A Unix time, in milliseconds from 13 digits on. One past the year 9999 (or with
    a digit ``int()`` does not read, such as ``²``) is refused like any unreadable date,
    not clamped (``DELETE ?q=before:99999999999999`` must not delete everything); it
    raised ValueError, OverflowError or OSError, a 500."""
    try:
        seconds = int(text) / 1000 if len(text) >= 13 else int(text)
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidInput(
            f"search: cannot read the date {text!r}: not a Unix time before the year 10000"
        ) from None


def _iso_or_rfc5322(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``2kb``, ``1.5m`` (K and M are 1024-based, as in Mailpit), however
    many digits: as a :class:`Decimal` (exact to 28 digits, far past any size), not a float,
    which 309 digits made infinite and ``int()`` of it an OverflowError (a 500), nor an
    ``int()`` of the text, which refuses 4,300. The store judges a size past any message's."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"search: cannot read the size {text!r}; write 2048, 2kb or 1.5mb")
    unit = (match.group(2) or "").lower()[:1]
    return int(Decimal(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit])
