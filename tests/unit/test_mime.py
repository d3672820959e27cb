"""Build outgoing MIME and parse it back: the two halves must agree."""

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from mailgate.mime import build_message, parse_message
from mailgate.model import Attachment, Message

BLOB = bytes(range(256)) * 4


def _message(**kw: object) -> Message:
    base: dict[str, object] = {
        "id": "0190-test",
        "sender": "Shop <shop@example.com>",
        "to": ("a@example.com",),
        "subject": "Your receipt",
        "message_id": "<abc@example.com>",
        "created_at": datetime(2026, 11, 3, 10, 30, tzinfo=UTC),
        "text": "plain body",
    }
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def _parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def test_headers_are_fixed_and_bcc_is_never_written() -> None:
    raw = build_message(
        _message(
            cc=("c@example.com",),
            bcc=("hidden@example.com",),
            reply_to="help@example.com",
            headers={"X-Order": "42"},
        )
    )
    msg = _parse(raw)
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["Cc"] == "c@example.com"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["Message-ID"] == "<abc@example.com>"
    assert msg["X-Mailgate-ID"] == "0190-test"
    assert msg["X-Order"] == "42"
    assert msg["Date"] == "Tue, 03 Nov 2026 10:30:00 +0000"
    assert b"hidden@example.com" not in raw
    assert "Bcc" not in msg
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only on the wire


def test_text_and_html_make_multipart_alternative_inside_mixed() -> None:
    raw = build_message(
        _message(
            html="<p>hi</p>",
            attachments=(Attachment("r.pdf", "application/pdf", BLOB),),
        )
    )
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    alternative = next(p for p in msg.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    parsed = parse_message(raw)
    assert parsed.text is not None and parsed.text.strip() == "plain body"
    assert parsed.html is not None and parsed.html.strip() == "<p>hi</p>"
    assert [(a.filename, a.content_type, a.content) for a in parsed.attachments] == [
        ("r.pdf", "application/pdf", BLOB)
    ]


def test_inline_image_is_related_to_the_html_part() -> None:
    raw = build_message(
        _message(
            text=None,
            html='<img src="cid:logo">',
            attachments=(Attachment("logo.png", "image/png", b"\x89PNG..", cid="logo"),),
        )
    )
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/related"
    parsed = parse_message(raw)
    assert parsed.attachments[0].cid == "logo" and parsed.attachments[0].inline


def test_utf8_subject_and_names_round_trip() -> None:
    raw = build_message(_message(subject="Grüße – 你好 ✓", sender="Jürgen <j@example.com>"))
    assert raw.isascii()  # encoded words: no SMTPUTF8 needed for non-ASCII names
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße – 你好 ✓"
    assert parsed.sender == "Jürgen <j@example.com>"


def test_utf8_address_uses_smtputf8_policy() -> None:
    raw = build_message(_message(to=("ü@example.com",)))
    assert "ü@example.com".encode() in raw


def test_parse_keeps_repeated_headers_as_lists() -> None:
    raw = b"Received: from a\r\nReceived: from b\r\nSubject: x\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.headers["Received"] == ["from a", "from b"]
    assert parsed.headers["Subject"] == "x"
    assert parsed.text == "body\n"


def test_parse_survives_garbage() -> None:
    parsed = parse_message(b"this is not\r\na message at all")
    assert parsed.subject == ""
    assert parsed.attachments == ()
