"""Which inbox captured mail lands in, and the tags it gets on arrival (issue 10).

A pure core: values in, values out. Parallel test runs keep apart by authenticating
with their own SMTP username (``inbox.sort_by = auth``), by an ``X-Mailgate-Inbox``
header (``header``) or by the recipient's domain (``domain``). Inbox names become a
path segment of the Mailpit-compatible base URL (``/mailpit/{inbox}/api/v1``), so they
are kept to ``[A-Za-z0-9._-]{1,64}``.

Tags come, as Mailpit applies them, from plus-addresses (``user+tag1+tag2@``, RFC 5233
sub-addressing) and from a comma-separated ``X-Tags`` header; their names are limited
to Mailpit's characters (letters, digits, space, ``.``, ``_``, ``-``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from email.utils import getaddresses
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_BOX",
    "INBOX_HEADER",
    "MAX_TAGS",
    "MAX_TAG_LENGTH",
    "SortBy",
    "box_for",
    "clean_box",
    "clean_tag",
    "clean_tags",
    "header_values",
    "message_id",
    "tags_for",
]

DEFAULT_BOX = "default"
INBOX_HEADER = "X-Mailgate-Inbox"
MAX_BOX_LENGTH = 64
MAX_TAGS = 32  #: tags kept per message; more from a header or addresses are dropped
MAX_TAG_LENGTH = 64

_NOT_BOX = re.compile(r"[^A-Za-z0-9._-]+")
_NOT_TAG = re.compile(r"[^A-Za-z0-9 ._-]+")
_SPACES = re.compile(r"\s+")
_ADDRESS_HEADERS = ("From", "To", "Cc", "Bcc")


class SortBy(StrEnum):
    """What names the inbox a captured message is kept in."""

    NONE = "none"  #: every message in ``default``
    AUTH = "auth"  #: the SMTP AUTH username (``default`` without AUTH)
    HEADER = "header"  #: the ``X-Mailgate-Inbox`` header
    DOMAIN = "domain"  #: the domain of the first envelope recipient


def box_for(
    sort_by: SortBy,
    *,
    auth: Mapping[str, Any] | None,
    headers: Mapping[str, str | list[str]],
    rcpt_to: Sequence[str],
) -> str:
    """The inbox a message goes to; ``default`` when what names it is missing or unusable."""
    name: str | None = None
    if sort_by is SortBy.AUTH and auth:
        name = auth.get("username")
    elif sort_by is SortBy.HEADER:
        name = next(iter(header_values(headers, INBOX_HEADER)), None)
    elif sort_by is SortBy.DOMAIN and rcpt_to:
        name = _domain(rcpt_to[0])
    return clean_box(name) if isinstance(name, str) else DEFAULT_BOX


def clean_box(name: str) -> str:
    """``name`` as an inbox name: each run of other characters becomes ``_`` (so
    ``ci@example.com`` is ``ci_example.com``), cut to 64; ``default`` if no letter or
    digit is left (``..`` must never be a path segment)."""
    cleaned = _NOT_BOX.sub("_", name.strip())[:MAX_BOX_LENGTH]
    return cleaned if any(c.isalnum() for c in cleaned) else DEFAULT_BOX


def _domain(address: str) -> str | None:
    """The domain of an envelope address, lower-cased, IDNA-encoded when it can be
    (``bücher.example`` is ``xn--bcher-kva.example``)."""
    _, at, domain = address.rpartition("@")
    if not at or not domain:
        return None
    domain = domain.strip().lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def tags_for(headers: Mapping[str, str | list[str]], rcpt_to: Sequence[str]) -> list[str]:
    """Tags of a newly captured message: ``X-Tags`` and the plus-addresses in From, To,
    Cc, Bcc and the envelope recipients (so a Bcc-only ``qa+smoke@`` tags it too)."""
    found = [t for value in header_values(headers, "X-Tags") for t in value.split(",")]
    # the address parser only for fields that can hold a plus-address: it was a tenth
    # of the capture server's CPU when it ran on every message
    fields = [v for v in _address_fields(headers) if "+" in v]
    addresses = [a for _, a in getaddresses(fields)] if fields else []
    addresses += rcpt_to
    for address in addresses:
        local, at, _ = address.rpartition("@")
        if at and "+" in local:
            found.extend(local.split("+")[1:])
    return clean_tags(found)


def _address_fields(headers: Mapping[str, str | list[str]]) -> list[str]:
    return [v for name in _ADDRESS_HEADERS for v in header_values(headers, name)]


def clean_tag(name: str) -> str:
    """A tag name: other characters become a space, spaces collapse, cut to 64."""
    collapsed = _SPACES.sub(" ", _NOT_TAG.sub(" ", name)).strip()
    return collapsed[:MAX_TAG_LENGTH].strip()


def clean_tags(names: Iterable[str]) -> list[str]:
    """Clean tag names, without empty ones and without repeats (compared ignoring case,
    the first spelling kept), at most 32, sorted as Mailpit lists them."""
    kept: dict[str, str] = {}
    for name in names:
        tag = clean_tag(name)
        if tag and tag.lower() not in kept and len(kept) < MAX_TAGS:
            kept[tag.lower()] = tag
    return sorted(kept.values(), key=str.lower)


def message_id(headers: Mapping[str, str | list[str]]) -> str | None:
    """The Message-ID without its angle brackets (as Mailpit keeps it), or None."""
    first = next(iter(header_values(headers, "Message-ID")), "")
    return first.strip().strip("<>").strip() or None


def header_values(headers: Mapping[str, str | list[str]], name: str) -> list[str]:
    """Every value of the header ``name``, looked up ignoring case (the parser keeps a
    header's first spelling; a repeated one is a list)."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
    return []
