"""Build the RFC 5322 bytes of a queued :class:`~mailgate.model.Message`.

Written directly, not through ``email.message.EmailMessage``: the shapes are few and
fixed (text and html as ``multipart/alternative``, inline images ``multipart/related``
to the html, attachments making it all ``multipart/mixed``), and the email package
re-parses every header it is given, which made building a 1 KB message cost more
CPU than sending it. Encoding is chosen per part, with C codecs only (``binascii``):

* text that is ASCII with lines of at most 998 octets (RFC 5322 §2.1.1) goes as
  ``7bit``; any other text as ``quoted-printable``, or ``base64`` when that is
  clearly shorter (mostly non-Latin text); never ``8bit``, which needs the upstream's
  8BITMIME (RFC 6152);
* attachments go as ``base64`` in lines of 76 (RFC 2045 §6.8);
* a file name that is not plain ASCII is written as an RFC 2231 parameter
  (``filename*=utf-8''…``), split into continuations so no line passes 78.

Every line ends in CRLF; a boundary is chosen that occurs in no part.
"""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from urllib.parse import quote

from mailgate.mime.headers import address_field, header_block, unstructured_field
from mailgate.model import Attachment, Message

__all__ = ["MAILGATE_ID_HEADER", "build_message"]

MAILGATE_ID_HEADER = "X-Mailgate-ID"

_MAX_LINE = 998  #: RFC 5322 §2.1.1, without the CRLF
_B64_LINE = 57  #: input bytes per base64 line: 76 characters (RFC 2045 §6.8)
_PARAM_CHUNK = 60  #: characters of an RFC 2231 continuation's value
_QP_MARGIN = 1.25  #: quoted-printable stays readable: kept unless base64 is this much shorter
_SAFE_FILENAME = frozenset(map(chr, range(0x20, 0x7F)))


@dataclass(frozen=True, slots=True)
class _Part:
    """One MIME entity: its header fields and its encoded body (CRLF line ends)."""

    fields: tuple[str, ...]
    body: bytes

    def render(self) -> bytes:
        return header_block(self.fields) + b"\r\n" + self.body


def build_message(message: Message) -> bytes:
    """The message as it goes on the wire (CRLF line ends).

    text and html become multipart/alternative; attachments with a ``cid`` are
    related to the html part, the rest make the whole multipart/mixed. Bcc is
    never written: it lives only in the envelope. The Message-ID and Date are
    fixed when the message is queued, so every retry sends identical headers.
    A message submitted over SMTP (``raw``) goes as the client sent it.
    """
    if message.raw is not None:
        return message.raw
    entity = _entity(message)
    return header_block([*_fields(message), "MIME-Version: 1.0"]) + entity.render()


def _fields(message: Message) -> Iterator[str]:
    yield address_field("From", [message.sender])
    yield address_field("To", message.to)
    if message.cc:
        yield address_field("Cc", message.cc)
    if message.reply_to:
        yield address_field("Reply-To", [message.reply_to])
    yield unstructured_field("Subject", message.subject)
    yield f"Date: {format_datetime(message.created_at)}"
    yield f"Message-ID: {message.message_id}"
    yield f"{MAILGATE_ID_HEADER}: {message.id}"
    for name, value in message.headers.items():
        yield unstructured_field(name, value)


def _entity(message: Message) -> _Part:
    body = _body(message)
    attached = [
        _attachment(a, inline=False)
        for a in message.attachments
        if a.cid is None or message.html is None
    ]
    if not attached:
        return body or _text("plain", "")
    return _multipart("mixed", [body, *attached] if body else attached)


def _body(message: Message) -> _Part | None:
    """The readable part: text, html (with its inline images), or both as alternatives."""
    html = None
    if message.html is not None:
        html = _text("html", message.html)
        related = [_attachment(a, inline=True) for a in message.attachments if a.cid]
        if related:
            html = _multipart("related", [html, *related])
    if message.text is None:
        return html
    text = _text("plain", message.text)
    return text if html is None else _multipart("alternative", [text, html])


def _text(subtype: str, text: str) -> _Part:
    data = text.encode("utf-8", "surrogateescape")
    lines = data.splitlines()  # bytes split at CR, LF and CRLF only, unlike str's
    crlf = b"\r\n".join(lines) + b"\r\n" if lines else b""
    if data.isascii() and all(len(line) <= _MAX_LINE for line in lines):
        cte, body = "7bit", crlf
    else:
        qp = binascii.b2a_qp(crlf, istext=True)
        b64 = _base64(crlf)
        readable = len(qp) <= _QP_MARGIN * len(b64)
        cte, body = ("quoted-printable", qp) if readable else ("base64", b64)
    return _Part(
        (f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"),
        body,
    )


def _attachment(att: Attachment, *, inline: bool) -> _Part:
    disposition = "inline" if inline else "attachment"
    fields = [
        f"Content-Type: {att.content_type}",
        f"Content-Disposition: {disposition};{_filename(att.filename)}",
        "Content-Transfer-Encoding: base64",
    ]
    if att.cid:
        fields.append(f"Content-ID: <{att.cid}>")
    return _Part(tuple(fields), _base64(att.content))


def _filename(name: str) -> str:
    """`` filename="…"`` (a quoted-string), or RFC 2231 continuations for anything else."""
    if set(name) <= _SAFE_FILENAME and len(name) <= _PARAM_CHUNK:
        return ' filename="' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    encoded = quote(name, safe="", encoding="utf-8")
    chunks = []
    while encoded:
        cut = min(_PARAM_CHUNK, len(encoded))
        if "%" in encoded[cut - 2 : cut]:  # never split a %XX escape
            cut = encoded.rindex("%", 0, cut)
        chunks.append(encoded[:cut])
        encoded = encoded[cut:]
    chunks[0] = "utf-8''" + chunks[0]
    return ";".join(f"\r\n filename*{i}*={chunk}" for i, chunk in enumerate(chunks))


def _multipart(subtype: str, parts: list[_Part]) -> _Part:
    rendered = [p.render() for p in parts]
    boundary = _boundary(rendered)
    delimiter = b"--" + boundary.encode("ascii")
    body = b"".join(delimiter + b"\r\n" + r + b"\r\n" for r in rendered) + delimiter + b"--\r\n"
    return _Part((f'Content-Type: multipart/{subtype}; boundary="{boundary}"',), body)


def _boundary(parts: list[bytes]) -> str:
    """A boundary that occurs in none of the parts (RFC 2046 §5.1.1)."""
    while True:
        boundary = "===============" + secrets.token_hex(12) + "=="
        needle = boundary.encode("ascii")
        if not any(needle in p for p in parts):
            return boundary


def _base64(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF."""
    return b"".join(
        binascii.b2a_base64(data[i : i + _B64_LINE], newline=False) + b"\r\n"
        for i in range(0, len(data), _B64_LINE)
    )
