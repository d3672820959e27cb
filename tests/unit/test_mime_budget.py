"""The email package reads a bounded part of a message's MIME fields (mime.budget):
per field and per message, in ``parse_message`` and in Mailpit's ``mime_parts`` alike."""

from __future__ import annotations

import pytest

from mailgate.mime import parse_message
from mailgate.mime.budget import (
    BARE_LENGTH,
    MAX_FIELD_LENGTH,
    MAX_FIELD_PARAMETERS,
    MESSAGE_LENGTH,
    MESSAGE_PARAMETERS,
    FieldBudget,
)
from mailgate.mime.parse import MAX_PARTS
from mailgate.mime.parts import mime_parts
from tests.unit.test_parse_limits import handed_fields, many_parameters


def _bounded(value: str) -> str:
    return FieldBudget().bounded({"content-type": value})["content-type"]


def test_a_field_within_the_bounds_is_handed_on_as_it_is() -> None:
    value = "text/plain; " + "; ".join(f"p{n}=v" for n in range(MAX_FIELD_PARAMETERS))
    assert value.count(";") == MAX_FIELD_PARAMETERS
    assert _bounded(value) is value
    long = "a" * MAX_FIELD_LENGTH
    assert _bounded(long) is long


def test_every_semicolon_counts_quoted_or_not_and_the_cut_is_before_one() -> None:
    """Counting needs no parse; a field past 64 ";" is no file name a client wrote."""
    quoted = 'attachment; filename="' + ";" * 100 + '"'
    assert _bounded(quoted) == 'attachment; filename="' + ";" * (MAX_FIELD_PARAMETERS - 1)
    folded = "text/plain;\r\n " + ";\r\n ".join(f"p{n}=v" for n in range(100))
    assert _bounded(folded).endswith(f";\r\n p{MAX_FIELD_PARAMETERS - 1}=v")


def test_a_long_field_is_cut_at_its_last_semicolon_within_the_length_else_at_it() -> None:
    assert _bounded('text/plain; name="a"; x="' + "x" * MAX_FIELD_LENGTH) == 'text/plain; name="a"'
    assert _bounded("<" + "c" * MAX_FIELD_LENGTH + ">") == "<" + "c" * (MAX_FIELD_LENGTH - 1)


def test_the_message_budget_is_spent_in_field_order_then_fields_are_bare() -> None:
    budget = FieldBudget(parameters=3, length=10_000)
    fields = {"content-type": "a/b; p=1; q=2", "content-disposition": "attachment; x=1; y=2"}
    assert budget.bounded(fields) == {
        "content-type": "a/b; p=1; q=2",
        "content-disposition": "attachment; x=1",
    }
    assert budget.bounded({"content-type": "a/b; p=1"}) == {"content-type": "a/b"}
    assert (budget.cut, budget.spent, budget.parameters) == (0, 2, 0)
    bare = FieldBudget(length=0)
    assert bare.bounded({"content-id": "c" * 1000}) == {"content-id": "c" * BARE_LENGTH}


def budget_parts(count: int, params: bytes) -> bytes:
    """A multipart/mixed of ``count`` PDFs, each named ``f<i>.pdf`` and then ``params``."""
    parts = b"".join(
        b'--b\r\nContent-Type: application/pdf; name="f%d.pdf"%s\r\n\r\n%d\r\n' % (i, params, i)
        for i in range(count)
    )
    return b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"


def _spent_problem(count: int) -> str:
    return (
        f"mime: more than {MESSAGE_PARAMETERS} parameters or {MESSAGE_LENGTH} characters"
        f" in the MIME fields of the message; {count} MIME fields read past that cut short"
        " (the raw source has them whole)"
    )


def test_past_the_messages_parameter_budget_a_field_keeps_no_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """150 parts of 60 parameters cost as much as one field of 9,000: the message as a
    whole hands on at most MESSAGE_PARAMETERS. Every part is still there, typed."""
    handed = handed_fields(monkeypatch)
    per_part = 60
    raw = budget_parts(150, b"".join(b"; p%d=v" % n for n in range(per_part - 1)))
    parsed = parse_message(raw)
    assert sum(value.count(";") for _, value in handed) == MESSAGE_PARAMETERS
    whole = (MESSAGE_PARAMETERS - 1) // per_part  # (the multipart has one)
    named = whole + 1  # the part the budget ends in keeps its first parameters: name=
    names = [a.filename for a in parsed.attachments]
    assert names == [f"f{i}.pdf" for i in range(named)] + [None] * (150 - named)
    assert [a.content for a in parsed.attachments] == [b"%d" % i for i in range(150)]
    assert {a.content_type for a in parsed.attachments} == {"application/pdf"}
    assert parsed.problems == (_spent_problem(150 - whole),)
    handed.clear()
    listed = mime_parts(raw, contents=False)  # what Mailpit lists: the named parts
    assert sum(value.count(";") for _, value in handed) == MESSAGE_PARAMETERS
    assert [p.filename for p in listed.each()] == names[:named]


def test_past_the_messages_length_budget_a_field_keeps_no_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the budget ends, a field is cut at its last ";" within what is left."""
    handed = handed_fields(monkeypatch)
    parts = b"".join(
        b'--b\r\nContent-Type: application/pdf; x="%s"; name="f%d.pdf"\r\n\r\n%d\r\n'
        % (b"x" * 7000, i, i)
        for i in range(100)
    )
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    parsed = parse_message(raw)
    assert sum(len(value) for _, value in handed) <= MESSAGE_LENGTH
    names = [a.filename for a in parsed.attachments]
    named = names.index(None)
    assert named == MESSAGE_LENGTH // 7040
    assert names == [f"f{i}.pdf" for i in range(named)] + [None] * (100 - named)
    assert [a.content for a in parsed.attachments] == [b"%d" % i for i in range(100)]
    assert {a.content_type for a in parsed.attachments} == {"application/pdf"}
    assert parsed.problems == (_spent_problem(100 - named),)
    handed.clear()
    listed = mime_parts(raw, contents=False)
    assert sum(len(value) for _, value in handed) <= MESSAGE_LENGTH
    assert [p.filename for p in listed.each()] == names[:named]


def test_mailpits_parts_read_a_field_of_10000_parameters_as_capture_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed = handed_fields(monkeypatch)
    raw = many_parameters(10_000).replace(b"text/plain", b"application/pdf")
    raw = raw.replace(
        b"Subject: params\r\n", b"Content-Disposition: attachment; filename=a.pdf\r\n"
    )
    listed = mime_parts(raw, contents=False)
    assert max(value.count(";") for _, value in handed) == MAX_FIELD_PARAMETERS
    [pdf] = listed.attachments
    assert (pdf.part_id, pdf.filename, pdf.content_type) == ("0", "a.pdf", "application/pdf")


def outlook_attachments(count: int) -> bytes:
    """``count`` PDFs with the fields Outlook writes: the most parameters normal mail has."""
    parts = b"".join(
        b'--b\r\nContent-Type: application/pdf; name="report %d.pdf"\r\n'
        b'Content-Disposition: attachment; filename="report %d.pdf"; size=4;\r\n'
        b' creation-date="Mon, 07 Dec 2026 10:00:00 GMT";\r\n'
        b' modification-date="Mon, 07 Dec 2026 10:00:00 GMT"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n" % (i, i)
        for i in range(count)
    )
    text = b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
    return b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + text + parts + b"--b--\r\n"


def test_a_normal_message_at_the_parts_bound_is_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """999 attachments with Outlook's five parameters each: nothing is cut, each part
    has its name, in the capture and in Mailpit's list."""
    handed = handed_fields(monkeypatch)
    raw = outlook_attachments(MAX_PARTS - 1)
    parsed = parse_message(raw)
    source = raw.decode()
    assert all(value in source for _, value in handed)
    assert len(handed) == 1 + 1 + 3 * (MAX_PARTS - 1)  # every field, as in the source
    assert parsed.problems == () and parsed.text == "see attached"
    names = [f"report {i}.pdf" for i in range(MAX_PARTS - 1)]
    assert [a.filename for a in parsed.attachments] == names
    assert {a.content for a in parsed.attachments} == {b"%PDF"}
    listed = mime_parts(raw, contents=False)
    assert [p.filename for p in listed.attachments] == names
