"""Mailpit's ``POST /api/v1/send`` request, built into the message it describes.

The request is Mailpit's ``SendRequest`` (``From{Email, Name}``, ``To``/``Cc``/``ReplyTo``
lists of those, ``Bcc`` addresses, ``Subject``, ``Text``, ``HTML``, ``Attachments``
``[{Content, Filename, ContentType, ContentID}]``, ``Tags``, ``Headers``); it is built
with mailgate's MIME builder and captured into the inbox as the capture transport
captures, envelope recipients To, Cc and Bcc. As Mailpit: JSON field names are
matched ignoring case (Go's decoder does), the address fields may not be set through
``Headers``, ``Tags`` become an ``X-Tags`` field, an attachment's base64 may carry a
``data:…;base64,`` prefix and one with a ``ContentID`` is inline.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from dataclasses import dataclass
from email.utils import formataddr, make_msgid
from typing import Any

from mailgate.clock import Clock
from mailgate.ids import new_id
from mailgate.ingest.validation import MULTIPART_REFUSED, is_multipart
from mailgate.mime import build_message
from mailgate.model import Attachment, Message

__all__ = ["SendRefused", "Sendable", "sendable"]

_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+$")
_RESTRICTED = {"to", "from", "cc", "bcc", "reply-to", "date", "subject", "content-type",
               "mime-version", "message-id"}  # fmt: skip
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")


class SendRefused(ValueError):
    """The request cannot be sent; ``str(exc)`` is the ``Error`` answered."""


@dataclass(frozen=True, slots=True)
class Sendable:
    raw: bytes
    mail_from: str
    recipients: tuple[str, ...]


def folded(data: Any) -> Any:
    """``data`` with its field names lower-cased at every level (Go matches them so),
    but for the header names inside ``Headers``."""
    if isinstance(data, dict):
        return {
            str(k).lower(): v if str(k).lower() == "headers" else folded(v) for k, v in data.items()
        }
    if isinstance(data, list):
        return [folded(v) for v in data]
    return data


def sendable(request: Any, clock: Clock, *, hostname: str = "mailgate") -> Sendable:
    """The message ``request`` describes, or :class:`SendRefused` saying what is wrong."""
    if not isinstance(request, dict):
        raise SendRefused("the request body must be a JSON object")
    data = folded(request)
    sender = _address(data.get("from"), "From")
    to = [_address(a, "To") for a in _list(data, "to")]
    cc = [_address(a, "Cc") for a in _list(data, "cc")]
    bcc = [_bare(a, "Bcc") for a in _list(data, "bcc")]
    reply_to = [_address(a, "Reply-To") for a in _list(data, "replyto")]
    headers = _headers(data.get("headers"), tags=_strings(data, "tags"))
    now = clock.now()
    message = Message(
        id=new_id(),
        sender=formataddr(sender),
        to=tuple(formataddr(a) for a in to),
        cc=tuple(formataddr(a) for a in cc),
        reply_to=", ".join(formataddr(a) for a in reply_to) or None,
        subject=_string(data, "subject"),
        message_id=make_msgid(domain=hostname),
        created_at=now,
        text=_string(data, "text") or (None if _string(data, "html") else ""),
        html=_string(data, "html") or None,
        headers=headers,
        attachments=tuple(_attachment(a) for a in _list(data, "attachments")),
    )
    recipients = tuple(dict.fromkeys([a for _, a in to] + [a for _, a in cc] + bcc))
    return Sendable(build_message(message), sender[1], recipients)


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SendRefused(f"{key} must be an array")
    return value


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SendRefused(f"{key} must be a string")
    return value


def _strings(data: dict[str, Any], key: str) -> list[str]:
    values = _list(data, key)
    if not all(isinstance(v, str) for v in values):
        raise SendRefused(f"{key} must be an array of strings")
    return values


def _address(value: Any, field: str) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise SendRefused(f'invalid {field} address: expected {{"Email", "Name"}}')
    email = _bare(value.get("email"), field)
    name = value.get("name") or ""
    if not isinstance(name, str) or "\r" in name or "\n" in name:
        raise SendRefused(f"invalid {field} name")
    return name, email


def _bare(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value.strip()):
        raise SendRefused(f"invalid {field} address: {value}")
    return value.strip()


def _headers(value: Any, *, tags: list[str]) -> dict[str, str]:
    if value is not None and not isinstance(value, dict):
        raise SendRefused("Headers must be an object")
    headers: dict[str, str] = {}
    if tags:
        headers["X-Tags"] = ", ".join(tags)
    for name, text in (value or {}).items():
        lower = name.lower()
        if lower in _RESTRICTED or (tags and lower == "x-tags"):
            raise SendRefused(f'cannot overwrite header: "{name}"')
        if not _FIELD_NAME.match(name) or not isinstance(text, str):
            raise SendRefused(f'invalid header: "{name}"')
        if "\r" in text or "\n" in text:
            raise SendRefused(f'invalid header: "{name}" holds a line break')
        headers[name] = text
    return headers


def _attachment(value: Any) -> Attachment:
    if not isinstance(value, dict):
        raise SendRefused("each attachment must be an object")
    filename = value.get("filename")
    content = value.get("content")
    if not isinstance(filename, str) or not filename or not isinstance(content, str):
        raise SendRefused("an attachment needs a Filename and a base64 Content")
    # Go's StdEncoding, as Mailpit decodes: line breaks skipped, anything else outside
    # the alphabet an error (not dropped, which made "!!!" an empty file)
    encoded = content.split(",")[-1].replace("\r", "").replace("\n", "")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SendRefused(f'error decoding base64 attachment "{filename}": {exc}') from None
    content_type = value.get("contenttype") or mimetypes.guess_type(filename)[0]
    cid = value.get("contentid") or None
    if not isinstance(content_type, str | None) or not isinstance(cid, str | None):
        raise SendRefused(f'invalid attachment "{filename}"')
    if any(c in f"{filename}{content_type or ''}{cid or ''}" for c in "\r\n"):
        raise SendRefused(f'invalid attachment "{filename}"')
    if content_type is not None and is_multipart(content_type):
        raise SendRefused(f'invalid attachment "{filename}": {MULTIPART_REFUSED}')
    return Attachment(filename, content_type or "application/octet-stream", data, cid=cid)
