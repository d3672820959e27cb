"""Search terms (:mod:`mailgate.inbox.search`) as one condition on ``inbox``.

SQLAlchemy Core only, the same SQL shape on SQLite and PostgreSQL: ``ILIKE`` (SQLite
compiles it to ``lower() LIKE lower()``, so case is ignored there for ASCII letters
only, the limit Mailpit documents for its SQLite), ``%``, ``_`` and ``\\`` in the
searched text escaped so they match themselves. Every condition is NULL-free
(nullable columns are coalesced to ``''``), so ``NOT`` of a term is exactly the rows
the term does not match.

Where the text lives: the subject and the From/To headers in their columns, decoded
(RFC 2047); Cc, Bcc and Reply-To inside the ``headers`` JSON, read with the engines'
JSON operators under the usual spellings of their names; the envelope recipients in
the ``rcpt_to`` JSON text, searched for the JSON form of the term (a non-ASCII
address is stored escaped); tags in the ``tags`` JSON text as ``"name"`` (tag names
hold no character JSON escapes); whether an attachment is inline in the
``attachments`` JSON as written by the default serializer (``"inline": true``; a
contract test on both engines pins it).

The searched text is cleaned as stored text is (:func:`~mailgate.store.schema.sanitize_text`:
NUL and lone surrogates become U+FFFD) in the two places that bind it, :func:`_contains` and
:func:`_in_json`, so a search finds what a stored value holds in their place. Bound raw, a
NUL compared with a header read from JSON (``->>`` is no :class:`SafeText` column to clean
it) was refused by PostgreSQL, a 500; on SQLite it ended the pattern there, so ``q=%00``
matched every message (and ``DELETE ?q=%00`` emptied the inbox).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Text, and_, cast, false, func, not_, or_, true

from mailgate.store.schema import inbox, sanitize_text

if TYPE_CHECKING:  # at run time the store needs the terms' attributes only
    from mailgate.inbox.search import Term

__all__ = ["escape_like", "has_tag", "matching"]

_c = inbox.c
#: the largest ``size`` the column holds (``INTEGER``: 32 bits on PostgreSQL). A size
#: search past it is decided here (no message is larger, every one is smaller): bound,
#: it was out of asyncpg's range (``larger:2048mb`` was a 500), past 64 bits SQLite's
_MAX_SIZE = 2**31 - 1


def matching(terms: Sequence[Term]) -> ColumnElement[bool]:
    """The rows every term matches (all rows for no terms)."""
    return and_(true(), *(_negatable(term) for term in terms))


def _negatable(term: Term) -> ColumnElement[bool]:
    condition = _condition(term)
    return not_(condition) if term.negated else condition


def _condition(term: Term) -> ColumnElement[bool]:
    field, value = term.field, term.value
    if field in _TEXT_FIELDS:
        assert isinstance(value, str)
        return _TEXT_FIELDS[field](value)
    match field:
        case "is:read":
            return _c.read.is_(True)
        case "is:tagged":
            return func.json_array_length(_c.tags) > 0
        case "has:attachment":
            return cast(_c.attachments, Text).like('%"inline": false%')
        case "has:inline":
            return cast(_c.attachments, Text).like('%"inline": true%')
        case "before":
            return _c.received_at <= value
        case "after":
            return _c.received_at >= value
        case "larger":
            assert isinstance(value, int)
            return _c.size > value if value < _MAX_SIZE else false()
        case "smaller":
            assert isinstance(value, int)
            return _c.size < value if value <= _MAX_SIZE else true()
    return false()


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    pattern = f"%{escape_like(sanitize_text(text))}%"
    return func.coalesce(column, "").ilike(pattern, escape="\\")


def _header(name: str) -> ColumnElement[Any]:
    """A header's value(s) from the ``headers`` JSON; the parser keeps a header's first
    spelling, so the usual ones are tried (``Cc``, ``CC``, ``cc``)."""
    spellings = dict.fromkeys((name, name.upper(), name.lower()))
    return func.coalesce(*(_c.headers[s].as_string() for s in spellings), "")


def _in_json(column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    """``text`` inside a JSON column's text, as :class:`SafeJSON` writes it (cleaned,
    then escaped)."""
    return _contains(cast(column, Text), json.dumps(sanitize_text(text))[1:-1])


def _from(text: str) -> ColumnElement[bool]:
    return or_(_contains(_c.from_header, text), _contains(_c.mail_from, text))


def _to(text: str) -> ColumnElement[bool]:
    return or_(
        _contains(_c.to_header, text),
        _in_json(_c.rcpt_to, text),
        _contains(_header("Cc"), text),
        _contains(_header("Bcc"), text),
    )


def _bcc(text: str) -> ColumnElement[bool]:
    """A Bcc header (rarely kept), or an envelope recipient To and Cc do not name."""
    hidden = and_(
        _in_json(_c.rcpt_to, text),
        not_(_contains(_c.to_header, text)),
        not_(_contains(_header("Cc"), text)),
    )
    return or_(_contains(_header("Bcc"), text), hidden)


def _addressed(text: str) -> ColumnElement[bool]:
    return or_(_from(text), _to(text), _contains(_header("Reply-To"), text))


def _text(text: str) -> ColumnElement[bool]:
    return or_(
        _contains(_c.subject, text),
        _from(text),
        _to(text),
        _contains(_c.text_body, text),
        _contains(_c.html_body, text),
    )


def has_tag(name: str) -> ColumnElement[bool]:
    """The rows with the tag ``name``, the whole name ignoring case."""
    return _contains(cast(_c.tags, Text), f'"{name}"')


_TEXT_FIELDS = {
    "text": _text,
    "from": _from,
    "to": _to,
    "cc": lambda text: _contains(_header("Cc"), text),
    "bcc": _bcc,
    "reply-to": lambda text: _contains(_header("Reply-To"), text),
    "addressed": _addressed,
    "subject": lambda text: _contains(_c.subject, text),
    "message-id": lambda text: _contains(_c.message_id, text),
    "tag": has_tag,
}
