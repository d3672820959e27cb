"""Parse raw RFC 5322 bytes into what the inbox shows: headers, text, html, attachments."""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

__all__ = ["ParsedAttachment", "ParsedMessage", "parse_message"]

HeaderValue = str | list[str]


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    filename: str | None
    content_type: str
    content: bytes
    cid: str | None
    inline: bool


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    headers: dict[str, HeaderValue]  #: decoded; a header that repeats becomes a list
    subject: str
    sender: str
    to: str
    text: str | None
    html: str | None
    attachments: tuple[ParsedAttachment, ...]


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse leniently: mail from the wild is often malformed, and capture must keep it.

    Every leaf part that is not the chosen text or html body is an attachment, in
    document order; that order is the attachment's index in the API.
    """
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    bodies = {id(p) for p in (text_part, html_part) if p is not None}
    attachments = tuple(
        _attachment(part)
        for part in msg.walk()
        if not part.is_multipart() and id(part) not in bodies
    )
    headers = _headers(msg)
    return ParsedMessage(
        headers=headers,
        subject=_first(headers, "Subject"),
        sender=_first(headers, "From"),
        to=_first(headers, "To"),
        text=_content(text_part),
        html=_content(html_part),
        attachments=attachments,
    )


def _first(headers: dict[str, HeaderValue], name: str) -> str:
    """The first value of a header, looked up case-insensitively (already decoded)."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value if isinstance(value, str) else value[0]
    return ""


def _headers(msg: EmailMessage) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    for name in dict.fromkeys(msg.keys()):
        try:
            values = [str(v) for v in msg.get_all(name, [])]
        except (ValueError, IndexError):
            values = [str(v) for n, v in msg.raw_items() if n == name]
        headers[name] = values[0] if len(values) == 1 else values
    return headers


def _content(part: object) -> str | None:
    if not isinstance(part, EmailMessage):
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset: fall back to a lossless-ish decode
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        return payload.decode("utf-8", "replace").replace("\r\n", "\n")
    # CRLF is wire format; text shown or handed to handlers uses plain newlines.
    return content.replace("\r\n", "\n") if isinstance(content, str) else None


def _attachment(part: EmailMessage) -> ParsedAttachment:
    payload = part.get_payload(decode=True)
    cid = part.get("Content-ID")
    return ParsedAttachment(
        filename=part.get_filename(),
        content_type=part.get_content_type(),
        content=payload if isinstance(payload, bytes) else b"",
        cid=str(cid).strip("<>") if cid else None,
        inline=part.get_content_disposition() == "inline",
    )
