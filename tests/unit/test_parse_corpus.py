"""Real-world-shaped messages (tests/data/*.eml) read as a mail client shows them.

Each file is written the way Thunderbird, Outlook, Apple Mail or Postfix write
mail; each test pins the text, the html and every attachment (name, type, size,
exact bytes) a reader would see.
"""

from __future__ import annotations

import base64
from pathlib import Path

from mailgate.mime import ParsedAttachment, ParsedMessage, parse_message

DATA = Path(__file__).parent.parent / "data"

PDF = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _parse(name: str) -> ParsedMessage:
    return parse_message(_raw(name))


def _between(raw: bytes, start: bytes, end: bytes) -> bytes:
    """The bytes after ``start`` up to (not including) ``end``, as they are in the file."""
    begin = raw.index(start) + len(start)
    return raw[begin : raw.index(end, begin)]


def _shape(att: ParsedAttachment) -> tuple[str | None, str, int]:
    return att.filename, att.content_type, len(att.content)


def test_thunderbird_forward_is_one_eml_attachment_not_walked_into() -> None:
    raw = _raw("forwarded_thunderbird.eml")
    parsed = parse_message(raw)
    assert parsed.subject == "Fwd: Quarterly report"
    assert parsed.text == "See the report below.\n\nAnna\n"
    assert parsed.html is None
    [forwarded] = parsed.attachments  # not the inner text, not the inner q3.pdf
    # The embedded message, up to the line break that belongs to the outer delimiter.
    embedded = _between(
        raw,
        b'filename="Quarterly report.eml"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n',
        b"\r\n--------------0AbC1dEf2GhI3jKl4MnO5pQr--",
    )
    assert embedded.startswith(b"Message-ID: <aa11bb22@") and embedded.endswith(b"--inner-b1--\r\n")
    assert _shape(forwarded) == ("Quarterly report.eml", "message/rfc822", len(embedded))
    assert forwarded.content == embedded
    assert not forwarded.inline
    inner = parse_message(forwarded.content)  # the download opens as a message of its own
    assert inner.subject == "Quarterly report" and inner.text == "Numbers attached."
    assert [(a.filename, a.content) for a in inner.attachments] == [("q3.pdf", PDF)]


def test_forward_without_a_filename_is_named_after_its_subject() -> None:
    parsed = _parse("forwarded_no_filename.eml")
    assert parsed.subject == "FW: Café menu"
    assert parsed.sender == '"Doe, Jane" <jane@example.com>'
    assert parsed.text == "FYI"
    [forwarded] = parsed.attachments
    assert forwarded.filename == "Café menu.eml" and forwarded.content_type == "message/rfc822"
    assert forwarded.content.startswith(b"From: Chef <chef@bistro.example>\r\n")
    assert forwarded.content.endswith("Crème brûlée today.".encode())
    assert parse_message(forwarded.content).text == "Crème brûlée today."


def test_postfix_bounce_has_the_notification_text_and_two_attachments() -> None:
    raw = _raw("bounce_postfix.eml")
    parsed = parse_message(raw)
    assert parsed.sender == "MAILER-DAEMON@mx.example.com (Mail Delivery System)"
    assert parsed.text is not None
    assert parsed.text.startswith("This is the mail system at host mx.example.com.\n")
    assert "Recipient address rejected: User unknown\n" in parsed.text
    report, returned = parsed.attachments  # not one empty attachment per DSN field block
    status = _between(raw, b"message/delivery-status\r\n\r\n", b"\r\n--4Xk3Zz1Y2Xz9sV")
    assert _shape(report) == (None, "message/delivery-status", len(status))
    assert report.content == status
    assert report.content.count(b"Final-Recipient:") == 2
    assert returned.filename == "Your receipt.eml"
    assert returned.content_type == "message/rfc822"
    assert returned.content == _between(
        raw, b"Content-Transfer-Encoding: 8bit\r\n\r\nReceived:", b"\r\n--4Xk3Zz1Y2Xz9sV"
    ).join([b"Received:", b""])
    assert parse_message(returned.content).text == "Thanks for your order.\n"


def test_outlook_alternative_inside_mixed_with_a_pdf() -> None:
    parsed = _parse("nested_alternative.eml")
    assert parsed.text == "Hello,\n\nyour invoice is attached.\n"
    assert parsed.html == (
        "<html><body><p>Hello,</p><p>your invoice is attached.</p></body></html>\n"
    )
    [pdf] = parsed.attachments
    assert _shape(pdf) == ("invoice-2026-117.pdf", "application/pdf", len(PDF))
    assert pdf.content == PDF


def test_apple_mail_related_html_with_an_inline_cid_image() -> None:
    parsed = _parse("related_inline_image.eml")
    assert parsed.text == "Here is the logo.\n"
    assert parsed.html == (
        '<html><body><p>Here is the logo.</p><img src="cid:logo@example.com"></body></html>'
    )
    [logo] = parsed.attachments
    assert _shape(logo) == ("logo.png", "image/png", len(PNG))
    assert logo.content == PNG and logo.cid == "logo@example.com" and logo.inline


def test_rfc2231_and_rfc2047_filenames_are_decoded_and_made_safe() -> None:
    parsed = _parse("rfc2231_filenames.eml")
    assert parsed.text == "five attachments"
    assert [_shape(a) for a in parsed.attachments] == [
        ("Résumé – final.pdf", "application/pdf", len(PDF)),  # continuations + charset
        ("übersicht.csv", "text/csv", 28),  # iso-8859-1 with a language tag
        ("отчёт.bin", "application/octet-stream", 4),  # Outlook's encoded word in quotes
        ("passwd", "text/plain", 10),  # ../../etc/passwd reduced to a base name
        ("evilX-Injected: 1.txt", "text/plain", 1),  # %0D%0A and %00 stripped
    ]
    pdf, csv, binary, passwd, _ = parsed.attachments
    assert pdf.content == PDF
    assert csv.content == "id;name\r\n1;Zoë\r\n2;Łukasz\r\n".encode()
    assert binary.content == b"\x00\x01\x02\x03"
    assert passwd.content == b"root:x:0:0"


def test_rfc2047_subject_with_b_and_q_words_folded_and_split() -> None:
    parsed = _parse("rfc2047_subject.eml")
    # White space between adjacent encoded words is dropped (RFC 2047 §6.2); "✓" is
    # split across two B words and still comes out whole.
    assert parsed.subject == "Grüße und gute Nächte – 你好 ✓"
    assert parsed.sender == "Jürgen Müller <jm@example.de>"
    assert parsed.to == "山田 <yamada@example.jp>"
    assert parsed.headers["Subject"] == parsed.subject
    assert parsed.text == "body\n"


def test_iso_8859_1_body_and_latin1_bytes_in_a_header() -> None:
    parsed = _parse("iso8859_body.eml")
    assert parsed.subject == "Café"
    assert parsed.sender == "François <f@example.fr>"
    # 0x80 is "€" as every mail client reads latin-1 labels (windows-1252).
    assert parsed.text == "Café crème brûlée à 5\u00a0€\n"


def test_shift_jis_body_and_encoded_words() -> None:
    parsed = _parse("shift_jis.eml")
    assert parsed.subject == "お知らせ"
    assert parsed.sender == "田中大郎 <tanaka@example.jp>"
    assert parsed.text == "こんにちは、世界。\n明日の会議は十時です。\n"
    assert parsed.attachments == ()


def test_quoted_printable_text_and_html() -> None:
    parsed = _parse("quoted_printable.eml")
    assert parsed.text == (
        "Café news: this line is long enough that the encoder had to wrap it "
        "with a soft line break, and 1+1=2."
    )
    assert parsed.html == '<p style="color:red">Café ✓</p>'
    assert parsed.attachments == ()


def test_missing_content_type_is_plain_text() -> None:
    parsed = _parse("no_content_type.eml")
    assert parsed.subject == "Cron <root@host> /usr/local/bin/backup"
    assert parsed.text == "backup finished: 12 files, 0 errors\n"
    assert parsed.html is None and parsed.attachments == () and parsed.problems == ()


def test_unused_declared_boundary_still_shows_both_bodies() -> None:
    parsed = _parse("broken_boundary.eml")
    assert parsed.text == "plain version"
    assert parsed.html == "<p>html version</p>"
    assert parsed.attachments == ()  # never the multipart itself
    assert parsed.problems == (
        "mime: multipart/alternative boundary missing or unused; read as actual-boundary-123",
    )


def test_multipart_without_any_boundary_shows_its_text() -> None:
    parsed = _parse("missing_boundary.eml")
    assert parsed.text == "Just a text body from a script that set the wrong type.\n"
    assert parsed.attachments == ()
    assert parsed.problems == ("mime: multipart/mixed without a usable boundary; shown as text",)


def test_raw_utf8_headers_and_utf8_body_without_charset() -> None:
    parsed = _parse("eight_bit_headers.eml")
    assert parsed.subject == "Grüße – 你好 ✓"
    assert parsed.sender == "Jürgen Groß <jürgen@bücher.example>"
    assert parsed.to == "山田 <yamada@example.jp>"
    assert parsed.text == "Grüße aus Köln – 你好 ✓\n"  # strict UTF-8 first: no U+FFFD


def test_8bit_body_without_charset_that_is_not_utf8_reads_as_latin1() -> None:
    parsed = _parse("eight_bit_latin1_no_charset.eml")
    assert parsed.text == "Grüße aus Köln\n"
    assert parsed.text is not None and "\ufffd" not in parsed.text


def test_a_message_that_is_an_rfc822_wrapper_shows_the_inner_text() -> None:
    parsed = _parse("rfc822_wrapper.eml")
    assert parsed.subject == "Archived message"  # the outer headers stay
    assert parsed.text == "Our offer: 10 % off."
    assert parsed.html == "<p>Our offer: 10 % off.</p>"
    assert parsed.attachments == ()


def test_no_corpus_message_lists_a_multipart_or_reports_a_problem_silently() -> None:
    for path in sorted(DATA.glob("*.eml")):
        parsed = parse_message(path.read_bytes())
        types = [a.content_type for a in parsed.attachments]
        assert not any(t.startswith("multipart/") for t in types), path.name
        assert all("\ufffd" not in (a.filename or "") for a in parsed.attachments), path.name
        if path.name not in ("broken_boundary.eml", "missing_boundary.eml"):
            assert parsed.problems == (), (path.name, parsed.problems)
