"""Build the RFC 5322 bytes of a queued :class:`~mailgate.model.Message`."""

from __future__ import annotations

from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from mailgate.mime.headers import address_field, header_block, unstructured_field
from mailgate.model import Attachment, Message

__all__ = ["MAILGATE_ID_HEADER", "build_message"]

MAILGATE_ID_HEADER = "X-Mailgate-ID"


def build_message(message: Message) -> bytes:
    """The message as it goes on the wire (CRLF line ends).

    text and html become multipart/alternative; attachments with a ``cid`` are
    related to the html part, the rest make the whole multipart/mixed. Bcc is
    never written: it lives only in the envelope. The Message-ID and Date are
    fixed when the message is queued, so every retry sends identical headers.
    """
    utf8 = _needs_smtputf8(message)
    msg = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    _set_body(msg, message)
    for att in message.attachments:
        if att.cid is None or message.html is None:
            _add(msg, att, inline=False)
    # The fields mailgate writes go first, encoded by mime.headers in linear time; the
    # email package writes only the MIME entity (MIME-Version, Content-*, the body).
    return header_block(_fields(message)) + msg.as_bytes()


def _needs_smtputf8(message: Message) -> bool:
    """RFC 6531: only a non-ASCII *address* needs SMTPUTF8; names use RFC 2047 words."""
    addresses = (message.sender, *message.to, *message.cc, message.reply_to or "")
    return not all(parseaddr(a)[1].isascii() for a in addresses)


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


def _set_body(msg: EmailMessage, message: Message) -> None:
    if message.text is not None:
        msg.set_content(message.text)
    if message.html is not None:
        if message.text is not None:
            msg.add_alternative(message.html, subtype="html")
        else:
            msg.set_content(message.html, subtype="html")
        related = [a for a in message.attachments if a.cid is not None]
        if related:
            html_part = msg.get_body(preferencelist=("html",))
            assert isinstance(html_part, EmailMessage)
            for att in related:
                _add(html_part, att, inline=True)


def _add(target: EmailMessage, att: Attachment, *, inline: bool) -> None:
    maintype, _, subtype = att.content_type.partition("/")
    add = target.add_related if inline else target.add_attachment
    add(
        att.content,
        maintype=maintype,
        subtype=subtype,
        filename=att.filename,
        disposition="inline" if inline else "attachment",
        cid=f"<{att.cid}>" if att.cid else None,
    )
