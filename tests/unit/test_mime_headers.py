"""The header fields mailgate writes: encoded once, folded in linear time, read back exactly."""

from __future__ import annotations

import email._header_value_parser as hvp
import re
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mime import build_message
from mailgate.mime.headers import address_field, unstructured_field
from mailgate.model import Message
from tests.builders import make_message

ENCODED_WORD = re.compile(rb"=\?utf-8\?b\?[A-Za-z0-9+/=]*\?=")


def _message(**kw: object) -> Message:
    return make_message(**{"sender": "Shop <shop@example.com>", "text": "plain body", **kw})


def _parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def _rfc2047(raw: bytes, name: str) -> str:
    """A field's value decoded as RFC 2047 §6.2 says: white space between adjacent
    encoded-words is dropped. (Python's address parser keeps it, against the RFC.)"""
    for field in raw.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n ", " ").split("\r\n"):
        if field.startswith(f"{name}: "):
            return str(make_header(decode_header(field[len(name) + 2 :])))
    raise AssertionError(f"no {name} field")


def _lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def test_long_non_ascii_names_and_values_round_trip_within_line_limits() -> None:
    name = "Jürgen Müller-Lüdenscheidt 你好 ✓ " * 120  # ~4,000 characters
    to = tuple(f'"{name.strip()} {i}" <r{i}@example.com>' for i in range(100))
    headers = {f"X-Note-{i}": "🎉 Grüße " * 400 for i in range(20)}
    raw = build_message(_message(to=to, subject="Grüße – 你好 ✓ " * 60, headers=headers))

    msg = _parse(raw)
    expected = ", ".join(f"{name.strip()} {i} <r{i}@example.com>" for i in range(100))
    assert _rfc2047(raw, "To") == expected
    assert msg["Subject"] == "Grüße – 你好 ✓ " * 60
    assert msg["X-Note-7"] == "🎉 Grüße " * 400
    # RFC 5322 §2.1.1: no line over 998 octets; RFC 2047 §2: encoded-words ≤ 75 characters
    assert max(len(line) for line in _lines(raw)) <= 998
    assert max(len(w) for w in ENCODED_WORD.findall(raw)) <= 75


def test_headers_are_not_refolded_by_the_email_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The email package's refolding is quadratic in a value's length: it may fold the
    small MIME headers it writes itself, never the (up to 4 KB) values mailgate writes."""
    refolded: list[str] = []
    original = hvp._refold_parse_tree  # type: ignore[attr-defined]

    def spy(parse_tree: hvp.TokenList, *, policy: object) -> str:
        refolded.append(str(parse_tree))
        return str(original(parse_tree, policy=policy))

    monkeypatch.setattr(hvp, "_refold_parse_tree", spy)
    raw = build_message(
        _message(
            sender="Jürgen <j@example.com>",
            to=("Zoë <z@example.com>", '"Doe, John" <j@example.org>'),
            cc=("Ünal <u@example.com>",),
            reply_to="Hilfe <h@example.com>",
            subject="Grüße " * 100,
            headers={"X-Long": "ä" * 4096},
        )
    )
    assert b"Subject: =?utf-8?b?" in raw
    assert not any("ä" in value or "Grüße" in value or "@" in value for value in refolded)
    assert sum(map(len, refolded)) < 500, refolded


def test_plain_ascii_stays_readable_and_folds_at_spaces() -> None:
    subject = "Your order " + " ".join(f"item-{i}" for i in range(40))
    field = unstructured_field("Subject", subject)
    lines = field.split("\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(" ") for line in lines[1:])
    assert field.replace("\r\n", "") == f"Subject: {subject}"  # unfolding restores it exactly
    assert "=?" not in field


@pytest.mark.parametrize(
    "value",
    [
        "x" * 1000,  # one word longer than a line may be: encoded so it can be split
        "has =?utf-8?q?x?= inside",  # looks like an encoded word: encoded, not interpreted
        "tab\there",
        "",
    ],
)
def test_unstructured_values_read_back_exactly(value: str) -> None:
    raw = build_message(_message(subject=value, headers={"X-Value": value}))
    msg = _parse(raw)
    assert msg["Subject"] == value
    assert msg["X-Value"] == value
    assert max(len(line) for line in _lines(raw)) <= 998


@pytest.mark.parametrize(
    ("display", "written"),
    [
        ("Shop", "Shop <s@example.com>"),
        ("Doe, John", '"Doe, John" <s@example.com>'),
        ('Say "hi" \\ bye', '"Say \\"hi\\" \\\\ bye" <s@example.com>'),
        ("Zoë", "=?utf-8?b?Wm/Dqw==?= <s@example.com>"),
    ],
)
def test_display_names_are_atoms_quoted_or_encoded(display: str, written: str) -> None:
    quoted = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert address_field("From", [f"{quoted} <s@example.com>"]) == f"From: {written}"
    msg = _parse(build_message(_message(sender=f"{quoted} <s@example.com>")))
    assert msg["From"].addresses[0].display_name == display


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\x85"),
        max_size=300,
    )
)
def test_property_any_text_reads_back(text: str) -> None:
    """Whatever printable text a subject or display name holds, a reader gets it back
    (leading and trailing white space aside, which readers strip)."""
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raw = build_message(_message(subject=text, to=(f"{quoted} <a@example.com>",)))
    msg = _parse(raw)
    assert msg["Subject"].strip() == text.strip()
    if not text.isascii():  # written as encoded-words
        assert _rfc2047(raw, "To") == f"{text} <a@example.com>"
    elif text.strip():
        assert msg["To"].addresses[0].display_name.strip() == text.strip()
