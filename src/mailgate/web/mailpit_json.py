"""Captured mail in Mailpit 1.30's JSON shapes: ``MessageSummary``, ``Message``, headers.

Field names, order and types follow Mailpit's Go structs (``internal/storage``), as its
clients read them: times in RFC 3339 as Go writes them (``Created`` in milliseconds,
UTC; ``Date`` in the message's own zone), addresses as ``{"Name", "Address"}``, lists
never null. Beyond Mailpit: ``Message`` also carries ``Read`` (the PyPI client requires
it), and ``Bcc`` lists the envelope recipients that no To/Cc/Bcc field names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

from mailgate.inbox.html_text import defuse
from mailgate.mime.entity import read_entity
from mailgate.mime.parts import MimePart, PartList, digests
from mailgate.store import CapturedRecord

__all__ = ["go_time", "headers_json", "message_json", "snippet", "summary_json"]

SNIPPET_LENGTH = 200  #: characters, then "..." (Mailpit's CreateSnippet)
_SPACE = re.compile(r"\s+")
_FOLD = re.compile(r"[ \t]*\r?\n[ \t]+")
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z|~]+$")  #: RFC 7230 token characters
_LINK = re.compile(r"<([^>]*)>")


def go_time(when: datetime, *, millis: bool = False) -> str:
    """RFC 3339 as Go's ``time.Time`` marshals it: the fraction without trailing zeros,
    ``Z`` for UTC, else the offset; ``millis`` cuts the fraction to milliseconds."""
    micro = when.microsecond - when.microsecond % 1000 if millis else when.microsecond
    fraction = f"{micro:06d}".rstrip("0")
    stamp = when.replace(microsecond=0).isoformat()
    base, zone = stamp[:19], stamp[19:]
    if zone in ("", "+00:00"):
        zone = "Z"
    return f"{base}.{fraction}{zone}" if fraction else f"{base}{zone}"


def summary_json(r: CapturedRecord) -> dict[str, Any]:
    """One message of a list (``MessageSummary``)."""
    item: dict[str, Any] = {
        "ID": r.id,
        "MessageID": r.message_id or "",
        "Read": r.read,
        "From": _sender(r) or {"Name": "", "Address": ""},
        "To": _addresses(_values(r.headers, "To")),
        "Cc": _addresses(_values(r.headers, "Cc")),
        "Bcc": _bcc(r),
        "ReplyTo": _addresses(_values(r.headers, "Reply-To")),
        "Subject": r.subject,
        "Created": go_time(r.received_at.astimezone(UTC), millis=True),
    }
    username = _username(r)
    if username:
        item["Username"] = username
    item |= {
        "Tags": list(r.tags),
        "Size": r.size,
        "Attachments": sum(1 for a in r.attachments if not a.get("inline")),
        "Snippet": snippet(r.text, r.html),
    }
    return item


def message_json(r: CapturedRecord, parts: PartList) -> dict[str, Any]:
    """One message (``Message``); ``Read`` is what it was before this request read it."""
    sender = _sender(r)
    item: dict[str, Any] = {
        "ID": r.id,
        "MessageID": r.message_id or "",
        "Read": r.read,
        "From": sender,
        "To": _addresses(_values(r.headers, "To")),
        "Cc": _addresses(_values(r.headers, "Cc")),
        "Bcc": _bcc(r),
        "ReplyTo": _addresses(_values(r.headers, "Reply-To")),
        "ReturnPath": _return_path(r, sender),
        "Subject": r.subject,
        "ListUnsubscribe": _list_unsubscribe(r.headers),
        "Date": go_time(_date(r)),
    }
    username = _username(r)
    if username:
        item["Username"] = username
    item |= {
        "Tags": list(r.tags),
        "Text": r.text or "",
        "HTML": r.html or "",
        "Size": r.size,
        "Inline": [attachment_json(p) for p in parts.inline],
        "Attachments": [attachment_json(p) for p in parts.attachments],
    }
    return item


def attachment_json(part: MimePart) -> dict[str, Any]:
    size, md5, sha1, sha256 = part.digests or digests(part.content)
    return {
        "PartID": part.part_id,
        "FileName": part.filename,
        "ContentType": part.content_type,
        "ContentID": part.content_id,
        "Size": size,
        "Checksums": {"MD5": md5, "SHA1": sha1, "SHA256": sha256},
    }


def headers_json(raw: bytes) -> dict[str, list[str]]:
    """The header fields as Go's ``net/mail`` keeps them: canonical names
    (``Message-Id``), values unfolded but not decoded, names sorted."""
    found: dict[str, list[str]] = {}
    for name, value in read_entity(raw, keep=10_000).fields:
        text = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
        found.setdefault(_canonical(name), []).append(_FOLD.sub(" ", text).strip())
    return dict(sorted(found.items()))


def _canonical(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``message-id`` → ``Message-Id``."""
    if not _TOKEN.match(name):
        return name
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


def snippet(text: str | None, html: str | None) -> str:
    """Up to 200 characters of the HTML's text (else the text), white space collapsed."""
    source = _html_text(html) if html and html.strip() else (text or "")
    flat = _SPACE.sub(" ", source.replace("\ufeff", " ")).strip()
    if len(flat) <= SNIPPET_LENGTH:
        return flat
    return flat[:SNIPPET_LENGTH].rstrip() + "..."


class _TextOnly(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        self.chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skipping:
            self.skipping -= 1
        self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.chunks.append(data)


def _html_text(html: str) -> str:
    parser = _TextOnly()
    parser.feed(defuse(html[:200_000]))  # a snippet needs only the start
    parser.close()
    return "".join(parser.chunks)


def _values(headers: Mapping[str, Any], name: str) -> list[str]:
    found: list[str] = []
    for key, value in headers.items():
        if key.lower() == name.lower():
            found.extend(value if isinstance(value, list) else [value])
    return found


def _addresses(values: Iterable[str]) -> list[dict[str, str]]:
    return [
        {"Name": name, "Address": address}
        for name, address in getaddresses([v.replace("\r", " ").replace("\n", " ") for v in values])
        if address or name
    ]


def _sender(r: CapturedRecord) -> dict[str, str] | None:
    found = _addresses(_values(r.headers, "From"))
    if found:
        return found[0]
    return {"Name": r.from_header, "Address": ""} if r.from_header else None


def _bcc(r: CapturedRecord) -> list[dict[str, str]]:
    """Bcc fields, and the envelope recipients no To, Cc or Bcc field names (as Mailpit
    shows a blind copy's recipient)."""
    listed = _addresses(_values(r.headers, "Bcc"))
    named = {
        a["Address"].lower()
        for field in ("To", "Cc")
        for a in _addresses(_values(r.headers, field))
    } | {a["Address"].lower() for a in listed}
    hidden = [a for a in dict.fromkeys(r.rcpt_to) if a.lower() not in named]
    return listed + [{"Name": "", "Address": a} for a in hidden]


def _return_path(r: CapturedRecord, sender: dict[str, str] | None) -> str:
    for value in _values(r.headers, "Return-Path"):
        path = value.strip().strip("<>").strip()
        if path:
            return path
    return r.mail_from or (sender["Address"] if sender else "")


def _date(r: CapturedRecord) -> datetime:
    for value in _values(r.headers, "Date"):
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return r.received_at


def _username(r: CapturedRecord) -> str:
    return str((r.auth or {}).get("username") or "")


def _list_unsubscribe(headers: Mapping[str, Any]) -> dict[str, Any]:
    header = next(iter(_values(headers, "List-Unsubscribe")), "")
    links = [link.strip() for link in _LINK.findall(header)]
    errors = ""
    if header and not links:
        errors = "No valid unsubscribe links found"
    elif any(not link.lower().startswith(("mailto:", "http://", "https://")) for link in links):
        errors = "Unsubscribe links must be mailto: or http(s):"
    return {
        "Header": header,
        "Links": links,
        "Errors": errors,
        "HeaderPost": next(iter(_values(headers, "List-Unsubscribe-Post")), ""),
    }
