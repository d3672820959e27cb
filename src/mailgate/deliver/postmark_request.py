"""The JSON body of Postmark's ``POST /email``, built from a message's fields.

Field names are Postmark's (postmarkapp.com/developer/api/email-api, "Send a
single email"): From, To, Cc, Bcc (comma-separated, at most 50 in all), Subject,
TextBody, HtmlBody, ReplyTo, Headers [{Name, Value}], Attachments [{Name,
Content (base64), ContentType, ContentID}], MessageStream.

Only the recipients still pending are addressed: a retry after a partial failure
must not reach again those who already have the message.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from email.utils import parseaddr
from typing import Any

from mailgate.mime import parse_message
from mailgate.model import Attachment, Message

__all__ = ["DEFAULT_STREAM", "email_fields"]

#: Postmark's default transactional stream
DEFAULT_STREAM = "outbound"


def email_fields(message: Message, pending: tuple[str, ...]) -> dict[str, Any]:
    if message.raw is not None:
        message = _from_raw(message)
    wanted = {address.lower() for address in pending}
    body: dict[str, Any] = {
        "From": message.sender,
        "To": _join(message.to, wanted),
        "Subject": message.subject,
        "MessageStream": str(message.metadata.get("message_stream", DEFAULT_STREAM)),
        "Headers": [{"Name": k, "Value": v} for k, v in message.headers.items()],
    }
    optional = {
        "Cc": _join(message.cc, wanted),
        "Bcc": _join(message.bcc, wanted),
        "TextBody": message.text,
        "HtmlBody": message.html,
        "ReplyTo": message.reply_to,
    }
    body.update({k: v for k, v in optional.items() if v})
    if message.attachments:
        body["Attachments"] = [_attachment(a) for a in message.attachments]
    return body


def _from_raw(message: Message) -> Message:
    """A message submitted over SMTP, in the fields Postmark takes (it takes no MIME):
    its bodies and attachments as parsed; the recipients are the envelope's."""
    parsed = parse_message(message.raw or b"")
    attachments = tuple(
        Attachment(a.filename or "attachment", a.content_type, a.content, a.cid)
        for a in parsed.attachments
    )
    return replace(message, text=parsed.text, html=parsed.html, attachments=attachments)


def _join(addresses: tuple[str, ...], wanted: set[str]) -> str:
    """The header form of the addresses still pending (display names kept)."""
    return ", ".join(a for a in addresses if parseaddr(a)[1].lower() in wanted)


def _attachment(attachment: Attachment) -> dict[str, str]:
    part = {
        "Name": attachment.filename,
        "Content": base64.b64encode(attachment.content).decode("ascii"),
        "ContentType": attachment.content_type,
    }
    if attachment.cid:
        part["ContentID"] = f"cid:{attachment.cid}"
    return part
