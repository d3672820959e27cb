"""Hostile and broken mail is kept: bounded depth, bounded header work, bounded MIME
parameters, no exceptions."""

from __future__ import annotations

from email.message import Message

import pytest

from mailgate.mime import parse_message
from mailgate.mime.budget import MAX_FIELD_LENGTH, MAX_FIELD_PARAMETERS
from mailgate.mime.decode import decode_header, decode_text, safe_filename
from mailgate.mime.parse import MAX_DEPTH, MAX_HEADER_FIELDS, MAX_PARTS
from mailgate.mime.view import MimeView


def nested(levels: int, inner: bytes = b"innermost") -> bytes:
    """``levels`` multiparts, each the only part of the one around it."""
    head = b"From: a@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(levels)))
    return head + opening + b"Content-Type: text/plain\r\n\r\n" + inner + closing + b"\r\n"


def many_headers(count: int, name: bytes = b"X-Filler") -> bytes:
    fields = b"".join(b"%s-%d: value %d\r\n" % (name, i, i) for i in range(count))
    return (
        b"From: a@example.com\r\nSubject: many\r\n"
        + fields
        + b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>still here</p>\r\n"
    )


def test_2000_nested_multiparts_are_kept_with_a_problem_not_a_recursion_error() -> None:
    raw = nested(2000)
    parsed = parse_message(raw)
    assert parsed.subject == "deep" and parsed.sender == "a@example.com"
    assert parsed.problems == (
        f"mime: multipart nested deeper than {MAX_DEPTH} levels;"
        " the deeper part is kept whole as one attachment",
    )
    [rest] = parsed.attachments  # the part at the depth bound, whole, for download
    assert rest.content_type == "application/octet-stream"
    assert rest.content.startswith(b'Content-Type: multipart/mixed; boundary="b64"\r\n')
    assert rest.content.endswith(b"--b64--")
    assert rest.content in raw


def test_nesting_within_the_bound_is_walked_to_the_innermost_text() -> None:
    parsed = parse_message(nested(MAX_DEPTH))
    assert parsed.text == "innermost"
    assert parsed.attachments == () and parsed.problems == ()


def test_40000_headers_decode_the_first_ones_and_still_find_the_body() -> None:
    parsed = parse_message(many_headers(40_000))
    assert len(parsed.headers) == MAX_HEADER_FIELDS
    assert parsed.headers["X-Filler-0"] == "value 0"
    assert parsed.subject == "many"
    # Content-Type comes after all 40,000 fields and is still honoured.
    assert parsed.html == "<p>still here</p>\n" and parsed.text is None
    assert parsed.problems == (
        f"headers: 40003 header fields; only the first {MAX_HEADER_FIELDS} are decoded,"
        " the rest are in the raw source",
    )


def test_header_lookup_is_one_pass_not_get_all_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get_all`` per name scans every field per name: quadratic in the field count."""
    calls: list[str] = []
    original = Message.get_all

    def counting(self: Message, name: str, failobj: object = None) -> object:
        calls.append(name)
        return original(self, name, failobj)

    monkeypatch.setattr(Message, "get_all", counting)
    parsed = parse_message(many_headers(500))
    assert calls == []
    assert len(parsed.headers) == 503


def test_repeated_headers_group_case_insensitively_in_order() -> None:
    raw = (
        b"Received: from a\r\nSubject: x\r\nreceived: from b\r\n"
        b"RECEIVED: from c\r\n\tcontinued\r\nX-Other: 1\r\n\r\nbody\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.headers == {
        "Received": ["from a", "from b", "from c\tcontinued"],
        "Subject": "x",
        "X-Other": "1",
    }


def test_too_many_parts_lists_the_first_ones_and_says_so() -> None:
    parts = b"".join(
        b"--p\r\nContent-Type: application/octet-stream\r\n\r\n%d\r\n" % i
        for i in range(MAX_PARTS + 50)
    )
    head = b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n"
    raw = head + parts + b"--p--\r\n"
    parsed = parse_message(raw)
    assert len(parsed.attachments) == MAX_PARTS
    assert parsed.attachments[-1].content == str(MAX_PARTS - 1).encode()
    assert parsed.problems == (f"mime: more than {MAX_PARTS} parts; the rest are not listed",)


def test_truncated_multipart_keeps_its_parts_and_says_so() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=t\r\n\r\n--t\r\n\r\nhello\r\n"
        b"--t\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGOD"
    )
    parsed = parse_message(raw)
    assert parsed.text == "hello"
    [gif] = parsed.attachments
    assert gif.content_type == "image/gif" and gif.content.startswith(b"GIF8")
    assert parsed.problems == ("mime: multipart/mixed has no closing boundary (truncated?)",)


def test_delimiter_lines_follow_rfc2046() -> None:
    """Only whole lines delimit: a longer token or mid-line text does not; padding does."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\npreamble --b\r\n"
        b"--b  \r\n\r\none --b\r\n--bb\r\nstill one\r\n"
        b"--b\r\nContent-Type: text/csv\r\n\r\ntwo\r\n--b--  \r\nepilogue\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text == "one --b\r\n--bb\r\nstill one".replace("\r\n", "\n")
    assert [a.content for a in parsed.attachments] == [b"two"]


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n--d--\r\n"
    )
    [message] = parse_message(raw).attachments
    assert message.content_type == "message/rfc822" and message.filename == "one.eml"
    assert message.content == b"Subject: one\r\n\r\nfirst"


def test_pathological_content_type_is_kept_not_raised() -> None:
    raw = b"Subject: odd\r\nContent-Type: text/plain; x=" + b"(" * 5000 + b"\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.subject == "odd"


def test_garbage_and_empty_input() -> None:
    assert parse_message(b"").subject == ""
    parsed = parse_message(b"this is not\r\na message at all")
    assert parsed.text == "this is not\na message at all" and parsed.attachments == ()
    mbox = b"From sender@example.com Tue Nov 3\r\nSubject: mbox\r\n\r\nx"
    assert parse_message(mbox).subject == "mbox"


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.exe", "evil.exe"),
        ("a\r\nb\x00c\x7f.txt", "abc.txt"),
        ("x\r\nContent-Type: text/html", "html"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override hides ".exe"
        ("line\u2028break.txt", "linebreak.txt"),
        ("Grüße 你好 ✓.txt", "Grüße 你好 ✓.txt"),
        ("=?utf-8?Q?=E2=9C=93.txt?=", "✓.txt"),
        ("..", None),
        ("  ", None),
        ("dir/", None),
        (None, None),
    ],
)
def test_safe_filename(name: str | None, safe: str | None) -> None:
    assert safe_filename(name) == safe


def test_text_decoding_never_shows_replacement_characters_for_valid_utf8() -> None:
    assert decode_text("Grüße\r\n".encode(), None) == "Grüße\n"
    assert decode_text("Grüße".encode(), "us-ascii") == "Grüße"  # mislabelled
    assert decode_text(b"Gr\xfc\xdfe", None) == "Grüße"
    assert decode_text("Grüße".encode(), "x-no-such-charset") == "Grüße"
    assert decode_text(b"abc", "base64") == "abc"  # not a text codec: sniffed instead
    assert decode_text("日本".encode("euc-jp"), "EUC-JP") == "日本"


#: charset names Python's codecs refuse with something other than LookupError
UNREADABLE_CHARSETS = [
    "a\x00b",  # ValueError: embedded null character
    "utf-8\x00",
    "\udcff",  # UnicodeEncodeError: the codec registry encodes the name to look it up
    "utf-8\udcff",
    "idna",  # UnicodeError: refuses the "replace" error handler
    "undefined",  # UnicodeError whatever it is given
    "punycode",  # UnicodeDecodeError on a non-ASCII byte, "replace" or not
    "a\x01b",  # control characters and very long names: LookupError, as before
    "x" * 5000,
]


@pytest.mark.parametrize("charset", UNREADABLE_CHARSETS)
def test_a_charset_python_cannot_decode_with_reads_as_unknown(charset: str) -> None:
    """``charset="a\\x00b"`` made ``bytes.decode`` raise ValueError, which only
    LookupError was caught for: the parser's catch-all then dropped the message's text,
    html and attachments. Such a name is an unknown charset: UTF-8, else latin-1."""
    assert decode_text("Grüße\r\n".encode(), charset) == "Grüße\n"
    assert decode_text(b"Gr\xfc\xdfe", charset) == "Grüße"
    assert decode_header(f"=?{charset}?Q?caf=C3=A9?= ok") == "café ok"


def test_a_part_with_an_unreadable_charset_costs_no_other_part() -> None:
    """The audit's message: a good text/plain, a text/html whose charset has a NUL in
    it, a PDF. All three were lost ("mime: body not parsed (ValueError)"). (One test
    for every charset, so that test_mime_stream runs it streamed too.)"""
    for charset in UNREADABLE_CHARSETS:
        raw = (
            'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
            "--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain\r\n"
            f'--m\r\nContent-Type: text/html; charset="{charset}"\r\n\r\n<p>caf\xe9</p>\r\n'
            "--m\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=a.pdf\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n"
        ).encode("latin-1", "surrogateescape")
        parsed = parse_message(raw)
        assert (parsed.text, parsed.html, parsed.problems) == ("plain", "<p>café</p>", ()), charset
        assert [(a.filename, a.content) for a in parsed.attachments] == [("a.pdf", b"%PDF-1.4\n")]


def test_header_decoding_keeps_what_it_cannot_decode() -> None:
    assert decode_header("=?utf-8?B?not base64!?=") == "=?utf-8?B?not base64!?="
    assert decode_header("=?x-unknown?Q?caf=C3=A9?=") == "café"
    assert decode_header("a =?utf-8?Q?b?= c") == "a b c"
    ru = "=?koi8-r*ru?Q?" + "".join(f"={b:02X}" for b in "привет".encode("koi8-r")) + "?="
    assert decode_header(ru) == "привет"  # RFC 2231 §5 language suffix
    assert decode_header("folded\r\n value") == "folded value"


def test_a_text_part_marked_attachment_is_never_the_body() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=m\r\n\r\n"
        b"--m\r\nContent-Type: text/html\r\n\r\n<p>body</p>\r\n"
        b"--m\r\nContent-Type: text/plain\r\n"
        b"Content-Disposition: attachment; filename=notes.txt\r\n\r\nnotes\r\n--m--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text is None and parsed.html == "<p>body</p>"
    assert [(a.filename, a.content) for a in parsed.attachments] == [("notes.txt", b"notes")]


def test_related_start_parameter_names_the_root_part() -> None:
    """RFC 2387 §3.2: ``start`` names the root; without it the first part is the root."""
    raw = (
        b'Content-Type: multipart/related; boundary=r; start="<root@x>"\r\n\r\n'
        b"--r\r\nContent-Type: text/html\r\nContent-ID: <other@x>\r\n\r\n<p>not me</p>\r\n"
        b"--r\r\nContent-Type: text/html\r\nContent-ID: <root@x>\r\n\r\n<p>root</p>\r\n--r--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.html == "<p>root</p>"
    assert [a.cid for a in parsed.attachments] == ["other@x"]


def test_boundaryless_multipart_text_uses_the_declared_charset() -> None:
    raw = b"Content-Type: multipart/mixed; charset=koi8-r\r\n\r\n" + "привет".encode("koi8-r")
    assert parse_message(raw).text == "привет"


def test_forwarded_message_without_a_subject_is_forwarded_eml() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=f\r\n\r\n--f\r\n\r\nsee attached\r\n"
        b"--f\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@example.com\r\n\r\nhi\r\n--f--\r\n"
    )
    [forwarded] = parse_message(raw).attachments
    assert forwarded.filename == "forwarded.eml"
    assert forwarded.content == b"From: x@example.com\r\n\r\nhi"


def test_the_first_of_repeated_mime_fields_counts() -> None:
    """As ``email.message.Message.get``: a second Content-Type does not override the first."""
    raw = b"Content-Type: text/html\r\nContent-Type: text/plain\r\n\r\n<p>x</p>\r\n"
    parsed = parse_message(raw)
    assert parsed.html == "<p>x</p>\n" and parsed.text is None


def test_undecodable_bytes_never_leave_lone_surrogates() -> None:
    """Everything parsed must be storable as UTF-8 text (JSON, PostgreSQL)."""
    raw = (
        b"Subject: caf\xe9 \xff\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--b\xff\r\nContent-Type: text/plain\r\n\r\nhi \xff\r\n--b\xff\r\n"
        b'Content-Type: image/png\r\nContent-Disposition: attachment; filename="\xff\xfe.png"'
        b"\r\n\r\nx\r\n--b\xff--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.subject == "café ÿ"
    assert parsed.text == "hi ÿ"
    [image] = parsed.attachments
    assert image.filename == "ÿþ.png"
    texts = [*parsed.headers, *map(str, parsed.headers.values()), *parsed.problems]
    for text in texts:
        text.encode("utf-8")


def test_an_encoded_word_with_8bit_bytes_in_its_base64_is_kept_as_it_is() -> None:
    """Raw 8-bit bytes inside a B word made ``a2b_base64`` raise ValueError (not
    binascii.Error): the message could not be stored and the client heard ``451``."""
    assert decode_header("=?utf-8?B?é?= x") == "=?utf-8?B?é?= x"
    raw = (
        b"From: =?utf-8?B?\xff\xfe?= <a@example.com>\r\nSubject: =?utf-8?B?caf\xc3\xa9?=\r\n"
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?B?\xc3\xa9.txt?="\r\n\r\nx\r\n'
        b"--zz--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.subject == "=?utf-8?B?café?="
    [attachment] = parsed.attachments
    assert attachment.filename == "=?utf-8?B?é.txt?="


def handed_fields(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The MIME fields the email package is given to read (by ``parse_message`` and
    ``mime_parts`` alike), as they are given, in order."""
    handed: list[tuple[str, str]] = []
    real = MimeView.set_raw

    def recorded(self: MimeView, name: str, value: str) -> None:
        handed.append((name, value))
        real(self, name, value)

    monkeypatch.setattr(MimeView, "set_raw", recorded)
    return handed


def many_parameters(count: int, first: bytes = b"charset=koi8-r") -> bytes:
    params = b"".join(b";\r\n p%d=v%d" % (n, n) for n in range(1, count))
    return (
        b"Subject: params\r\nContent-Type: text/plain; " + first + params + b"; name=late.txt"
        b"\r\n\r\n" + "Привет".encode("koi8-r") + b"\r\n"
    )


def test_a_field_of_10000_parameters_is_read_up_to_its_64th_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The email package reads a parameter in about 0.05 ms, and splits a field one
    parameter at a time (quadratic): 10,000 took 1.4 s, on every read of the message."""
    handed = handed_fields(monkeypatch)
    parsed = parse_message(many_parameters(10_000))
    assert max(value.count(";") for _, value in handed) == MAX_FIELD_PARAMETERS
    assert parsed.text == "Привет\n"  # the first parameter is read
    assert parsed.attachments == ()  # name= is the 10,001st: not read
    assert parsed.problems == (
        f"mime: 1 MIME field of more than {MAX_FIELD_PARAMETERS} parameters or"
        f" {MAX_FIELD_LENGTH} characters read up to there (the raw source has it whole)",
    )


def test_a_field_within_the_bounds_is_read_whole_as_today(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 parameters, or 8 KiB, is far beyond what mail clients write, and read whole."""
    handed = handed_fields(monkeypatch)
    raw = many_parameters(MAX_FIELD_PARAMETERS - 1)
    parsed = parse_message(raw)
    [content_type] = {value for _, value in handed}
    assert content_type.count(";") == MAX_FIELD_PARAMETERS
    assert content_type.endswith("; name=late.txt")
    assert parsed.text == "Привет\n" and parsed.problems == ()
    long_value = "x" * (MAX_FIELD_LENGTH - len("attachment; filename=.txt"))
    long_field = f"Content-Disposition: attachment; filename={long_value}.txt".encode()
    parsed = parse_message(b"Content-Type: application/pdf\r\n" + long_field + b"\r\n\r\n%PDF")
    assert handed[-1] == ("Content-Disposition", long_field.decode().split(": ", 1)[1])
    assert len(handed[-1][1]) == MAX_FIELD_LENGTH
    assert parsed.problems == ()
    [pdf] = parsed.attachments
    assert pdf.filename == f"{long_value}.txt"[:255]  # (safe_filename's own bound)


def test_an_rfc_2231_filename_of_255_cjk_characters_is_read_whole() -> None:
    """RFC 2231 §3: a long value in numbered sections, as Thunderbird writes one."""
    name = "資料" * 125 + "表.pdf"
    encoded = "".join(f"%{byte:02X}" for byte in name.encode())
    sections = [encoded[i : i + 66] for i in range(0, len(encoded), 66)]
    assert 30 < len(sections) < MAX_FIELD_PARAMETERS
    disposition = "attachment" + "".join(
        f";\r\n filename*{n}*={'utf-8' + chr(39) * 2 if n == 0 else ''}{s}"
        for n, s in enumerate(sections)
    )
    raw = f"Content-Type: application/pdf\r\nContent-Disposition: {disposition}\r\n\r\n%PDF"
    parsed = parse_message(raw.encode())
    assert parsed.problems == ()
    [pdf] = parsed.attachments
    assert pdf.filename == name


def test_a_field_past_8_kib_is_cut_at_its_last_semicolon_within_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed = handed_fields(monkeypatch)
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="a.pdf"; x="' + b"x" * 100_000 + b'"\r\n'
        b"Content-ID: <" + b"c" * 100_000 + b">\r\n\r\n%PDF\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert dict(handed)["Content-Disposition"] == 'attachment; filename="a.pdf"'
    assert len(dict(handed)["Content-Id"]) == MAX_FIELD_LENGTH  # no ";": cut there
    [pdf] = parsed.attachments
    assert pdf.filename == "a.pdf" and pdf.content == b"%PDF"
    assert pdf.cid == "c" * (MAX_FIELD_LENGTH - 1)
    assert parsed.problems == (
        f"mime: 2 MIME fields of more than {MAX_FIELD_PARAMETERS} parameters or"
        f" {MAX_FIELD_LENGTH} characters read up to there (the raw source has them whole)",
    )
