"""MimeView answers as the email package's EmailMessage does, parsing each field once
(and a field seen before, once per process) instead of at every read."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import pytest

from mailgate.mime import parse_message
from mailgate.mime import view as view_module
from mailgate.mime.parts import mime_parts
from mailgate.mime.view import KEPT_LENGTH, MimeView, _parse, _parsed

FIELD_SETS = [
    {},
    {"Content-Type": "text/plain; charset=us-ascii"},
    {"Content-Type": 'TEXT/HTML; Charset="UTF-8"', "Content-Transfer-Encoding": "Base64"},
    {"Content-Type": 'multipart/mixed; boundary="==b 1=="'},
    {"Content-Type": "multipart/related; type=text/html; start=<root@x>"},
    {"Content-Type": "application/pdf; name*=utf-8''r%C3%A9sum%C3%A9.pdf",
     "Content-Disposition": "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"},
    {"Content-Type": "image/png", "Content-Disposition": 'inline; filename="a b.png"',
     "Content-ID": "<img1@example>"},
    {"Content-Type": "text/plain; charset=", "Content-Disposition": "attachment;;filename"},
    {"Content-Type": "nonsense", "Content-Disposition": "; broken"},
    {"Content-Type": "text/plain; name=" + "x" * (KEPT_LENGTH + 50)},  # parsed anew
]  # fmt: skip


def _answers(view: EmailMessage) -> tuple[object, ...]:
    return (
        view.get_content_type(),
        view.get_content_maintype(),
        view.get_content_subtype(),
        view.get_content_charset(),
        view.get_param("charset"),
        view.get_param("name"),
        view.get_param("start"),
        view.get_boundary(),
        view.get_filename(),
        view.get_content_disposition(),
        view.is_attachment(),
        str(view.get("content-id", "")),
        str(view.get("content-transfer-encoding", "")),
        view.get("x-absent", "absent"),
    )


@pytest.mark.parametrize("fields", FIELD_SETS)
def test_the_view_answers_as_the_email_package_does(fields: dict[str, str]) -> None:
    plain, view = EmailMessage(policy=policy.default), MimeView()
    for message in (plain, view):
        message.set_default_type("text/plain")
        for name, value in fields.items():
            message.set_raw(name, value)
    assert _answers(view) == _answers(plain)
    assert _answers(view) == _answers(view)  # read again, from what it kept


def test_a_field_is_parsed_once_per_process() -> None:
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nhi\r\n"
    )
    _parsed.cache_clear()
    first = parse_message(raw)
    parsed = _parsed.cache_info().misses
    assert parsed == 2  # Content-Type and Content-Transfer-Encoding, each once
    again = parse_message(raw)
    assert _parsed.cache_info().misses == parsed  # nothing parsed anew
    assert again == first and first.text == "hi\n"


def test_a_long_field_is_parsed_once_per_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field too long to keep for the process is still parsed once by its view, not
    at every read: the email API reads Content-Type for the type, the main type, the
    charset and each parameter."""
    parses: list[str] = []

    def counted(name: str, value: str) -> object:
        parses.append(name)
        return _parse(name, value)

    monkeypatch.setattr(view_module, "_parse", counted)
    long_type = "text/plain; charset=utf-8; " + "; ".join(f"p{n}=v{n}" for n in range(40))
    assert len(long_type) > KEPT_LENGTH
    view, plain = MimeView(), EmailMessage(policy=policy.default)
    for message in (view, plain):
        message.set_raw("Content-Type", long_type)
        message.set_raw("Content-Disposition", "attachment; filename=" + "x" * KEPT_LENGTH)
    assert _answers(view) == _answers(view) == _answers(plain)
    assert sorted(parses) == ["Content-Disposition", "Content-Type"]


@pytest.mark.parametrize("label", ["a\x00b", "\udcff", "idna", "undefined", "punycode"])
def test_an_rfc_2231_charset_the_codecs_refuse_reads_as_unknown(label: str) -> None:
    """The email package decodes ``name*=charset''value`` catching only LookupError:
    with a NUL in the charset (ValueError), or ``idna`` (UnicodeError), every read of
    the field raised, and the message lost its text, html and attachments (and
    Mailpit's part list raised). The field now reads as with an unknown charset."""
    view = MimeView()
    view.set_raw("Content-Type", f"text/html; charset*={label}''utf-8; boundary*={label}''b")
    view.set_raw("Content-Disposition", f"attachment; filename*={label}''r%C3%A9sum%C3%A9.pdf")
    assert view.get_content_type() == "text/html" and view.get_content_charset() == "utf-8"
    assert view.get_boundary() == "b" and view.get_filename() == "résumé.pdf"
    assert view.is_attachment()


@pytest.mark.parametrize("label", ["a\x00b", "idna", "undefined", "punycode"])
def test_a_part_with_an_rfc_2231_charset_the_codecs_refuse_costs_no_other_part(
    label: str,
) -> None:
    """As the audit's ``charset="a\\x00b"``, but in a parameter's RFC 2231 charset."""
    raw = (
        "Content-Type: multipart/mixed; boundary=m\r\n\r\n"
        "--m\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        f"--m\r\nContent-Type: text/html; charset*={label}''utf-8\r\n\r\n<p>caf\xc3\xa9</p>\r\n"
        "--m\r\nContent-Type: application/pdf\r\n"
        f"Content-Disposition: attachment; filename*={label}''r%C3%A9sum%C3%A9.pdf\r\n\r\n"
        "%PDF\r\n--m--\r\n"
    ).encode("latin-1")
    parsed = parse_message(raw)
    assert (parsed.text, parsed.html, parsed.problems) == ("plain", "<p>café</p>", ())
    assert [(a.filename, a.content) for a in parsed.attachments] == [("résumé.pdf", b"%PDF")]
    assert [(p.part_id, p.filename) for p in mime_parts(raw).attachments] == [("3", "résumé.pdf")]
