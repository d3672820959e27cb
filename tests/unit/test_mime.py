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


TEXTS = [
    "",
    "one line",
    "lines\nwith LF\r\nand CRLF\rand CR\n",
    "trailing spaces   \nand tabs\t\n",
    "a" * 5000,  # one ASCII line longer than 998: not 7bit
    "Grüße aus Köln, " * 40,  # mostly Latin: quoted-printable
    "你好，世界。" * 300,  # mostly non-Latin: base64 is shorter
    "=?utf-8?q?not-a-word?= = =3D\n.\n..leading dots\nFrom the start\n",
    "--===============000==\n--boundary-looking line\n",
]


def _lines_fit(raw: bytes) -> bool:
    return all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_every_text_round_trips_with_crlf_lines_of_at_most_998() -> None:
    for text in TEXTS:
        for html in (None, f"<pre>{text}</pre>"):
            raw = build_message(_message(text=text, html=html))
            assert _lines_fit(raw), text[:40]
            assert b"\n" not in raw.replace(b"\r\n", b""), text[:40]
            msg = _parse(raw)
            body = msg.get_body(preferencelist=("plain",))
            assert body is not None
            expected = "\n".join(text.splitlines()) + ("\n" if text else "")
            assert body.get_content().replace("\r\n", "\n") == expected, text[:40]
            assert (parse_message(raw).text or "").replace("\r\n", "\n") == expected


def test_the_encoding_is_chosen_per_text() -> None:
    def cte(text: str) -> str:
        return str(_parse(build_message(_message(text=text)))["Content-Transfer-Encoding"])

    assert cte("plain ascii\n" * 3) == "7bit"
    assert cte("x" * 999) == "quoted-printable"  # too long a line for 7bit
    assert cte("Viele Grüße aus Köln, bis bald! " * 10) == "quoted-printable"
    assert cte("你好" * 100) == "base64"
    # never 8bit: that needs the upstream's 8BITMIME
    assert all(cte(t) != "8bit" for t in TEXTS)


def test_attachment_names_round_trip_as_rfc_2231_when_not_plain_ascii() -> None:
    names = [
        "r.pdf",
        'quote" and ; semi=colon.txt',
        "Übersicht März.pdf",
        "报告" * 100 + ".pdf",
        "n" * 200 + ".txt",
    ]
    for name in names:
        raw = build_message(_message(attachments=(Attachment(name, "application/pdf", BLOB),)))
        assert _lines_fit(raw) and raw.isascii(), name[:20]
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        [part] = list(_parse(raw).iter_attachments())
        assert part.get_filename() == name
        assert part.get_content() == BLOB
        assert [a.filename for a in parse_message(raw).attachments] == [name]


def test_boundaries_never_occur_in_the_parts() -> None:
    raw = build_message(
        _message(
            text="--===============",
            html="<p>--==</p>",
            attachments=(Attachment("a.bin", "application/x", BLOB),),
        )
    )
    msg = _parse(raw)
    boundaries = [p.get_boundary() for p in msg.walk() if p.is_multipart()]
    assert len(boundaries) == 2 and len(set(boundaries)) == 2
    for b in boundaries:
        assert b is not None and raw.count(f"--{b}\r\n".encode()) >= 2


def test_attachments_alone_and_nothing_at_all() -> None:
    only = build_message(
        _message(text=None, attachments=(Attachment("a.txt", "text/plain", b"hi"),))
    )
    msg = _parse(only)
    assert msg.get_content_type() == "multipart/mixed"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["a.txt"]
    empty = _parse(build_message(_message(text=None)))
    assert empty.get_content_type() == "text/plain" and empty.get_content() == ""
