"""Firestore ``mail`` documents to messages (pure): contract detection, the work rules,
both contracts field by field, nodemailer attachments, and Handlebars templates in a
sandbox that hostile templates cannot leave, hang or blow up."""

from __future__ import annotations

import ast
import base64
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.sources.firestore.contracts import (
    MAX_RENDERED_CHARS,
    MAX_TAG_CHARS,
    MAX_TEMPLATE_CHARS,
    Contract,
    ContractOptions,
    InvalidDocument,
    detect,
    needs_work,
    require_contract,
    template_names,
    to_message,
    uids_of,
)
from tests.builders import parse_submitted

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
OPTIONS = ContractOptions(templates_collection="templates")
SIMPLE = {"to": "a@example.com", "subject": "Hi", "message": {"html": "<p>x</p>"}}
EXTENSION = {"to": "a@example.com", "message": {"subject": "Hi", "text": "x"}}
Doc = dict[str, Any]


def simple(**fields: Any) -> dict[str, Any]:
    return to_message({**SIMPLE, **fields}, Contract.SIMPLE, path="mail/s", options=OPTIONS)


def extension(
    users: dict[str, Doc] | None = None,
    templates: dict[str, Doc] | None = None,
    options: ContractOptions = OPTIONS,
    **fields: Any,
) -> dict[str, Any]:
    doc = {**EXTENSION, **fields}
    return to_message(doc, Contract.EXTENSION, path="mail/e", options=options,
                      users=users or {}, templates=templates or {})  # fmt: skip


def invalid(reason: str) -> Any:
    return pytest.raises(InvalidDocument, match=reason)


# --- detect ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "contract"),
    [
        ({**SIMPLE, "delivery": None}, Contract.SIMPLE),
        ({"to": "a@x.com", "state": "ERROR"}, Contract.SIMPLE),
        ({"to": "a@x.com", "delivery": {"success": False}}, Contract.SIMPLE),
        (EXTENSION, Contract.EXTENSION),
        ({"to": "a@x.com", "message": {"messageId": "<m@x>"}}, Contract.EXTENSION),
        ({"to": "a@x.com", "template": {"name": "t"}}, Contract.EXTENSION),
        ({"bccUids": ["u"]}, Contract.EXTENSION),
        ({"to": "a@x.com", "delivery": {"state": "PENDING"}}, Contract.EXTENSION),
        ({**SIMPLE, "delivery": {"state": "PENDING"}}, Contract.EXTENSION),  # extension marks win
        ({**EXTENSION, "state": "x"}, Contract.EXTENSION),
        ({}, None),
        ({"to": "a@x.com"}, None),
        ({"to": "a@x.com", "subject": "s", "message": {"text": "t"}}, None),
        ({"to": "a@x.com", "message": ["html"], "delivery": "SENT", "template": None}, None),
        ({"state": None, "toUids": None}, None),
    ],
)
def test_detect(doc: Doc, contract: Contract | None) -> None:
    assert detect(doc) is contract


def test_require_contract_says_what_each_contract_needs() -> None:
    assert require_contract(SIMPLE) is Contract.SIMPLE
    with invalid("fits neither contract: the simple one needs to, subject and message.html"):
        require_contract({"to": "a@x.com"})


# --- needs_work -----------------------------------------------------------------------


def work(doc: Doc, contract: Contract, max_retry_count: int = 3) -> bool:
    return needs_work(doc, contract, now=NOW, max_retry_count=max_retry_count)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, True),
        ({"delivery": None}, True),
        ({"delivery": None, "state": "SENT"}, True),
        ({"state": "ERROR", "delivery": {"success": False}}, True),
        ({"state": "ERROR", "delivery": {"success": False}, "retryCount": 2}, True),
        ({"state": "ERROR", "delivery": {"success": False}, "retryCount": 3}, False),
        ({"state": "ERROR", "delivery": {"success": False}, "retryCount": 7.0}, False),
        ({"state": "ERROR", "delivery": {"success": True}}, False),
        ({"state": "SENT", "delivery": {"success": True}}, False),
        ({"state": "RETRY", "delivery": {"success": False}}, False),
        ({"delivery": {"success": True}}, False),
        ({"state": "ERROR", "delivery": "failed", "retryCount": "9"}, True),  # odd: counts 0
        ({"state": "ERROR", "delivery": {}, "retryCount": True}, True),
        ({"state": "ERROR", "delivery": {}, "retryCount": float("nan")}, True),
        ({"state": "ERROR", "delivery": {}, "retryCount": -5}, True),
    ],
)
def test_needs_work_simple(doc: Doc, expected: bool) -> None:
    assert work(doc, Contract.SIMPLE) is expected


def test_simple_retry_limit_is_the_setting() -> None:
    doc = {"state": "ERROR", "delivery": {"success": False}, "retryCount": 1}
    assert work(doc, Contract.SIMPLE, max_retry_count=2)
    assert not work(doc, Contract.SIMPLE, max_retry_count=1)


LATER, EARLIER = NOW + timedelta(seconds=1), NOW - timedelta(seconds=1)


def _nanos(seconds: int) -> datetime:
    """A time as google-cloud-firestore reads it: with nanoseconds."""
    moment = NOW + timedelta(seconds=seconds)
    value: datetime = DatetimeWithNanoseconds(  # type: ignore[no-untyped-call]
        *moment.timetuple()[:6], nanosecond=5, tzinfo=UTC
    )
    return value


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        (None, True),
        ({}, True),
        ({"state": "PENDING"}, True),
        ({"state": "PROCESSING", "leaseExpireTime": LATER}, False),
        ({"state": "PROCESSING", "leaseExpireTime": EARLIER}, True),
        ({"state": "PROCESSING", "leaseExpireTime": EARLIER.replace(tzinfo=None)}, True),
        ({"state": "PROCESSING", "leaseExpireTime": LATER.replace(tzinfo=None)}, False),
        ({"state": "PROCESSING", "leaseExpireTime": _nanos(-1)}, True),
        ({"state": "PROCESSING", "leaseExpireTime": _nanos(+1)}, False),
        ({"state": "PROCESSING"}, True),  # no lease: nobody holds it
        ({"state": "PROCESSING", "leaseExpireTime": "tomorrow"}, True),
        ({"state": "RETRY", "leaseExpireTime": LATER}, False),
        ({"state": "RETRY", "leaseExpireTime": None}, True),  # a RETRY set by hand
        ({"state": "SUCCESS", "leaseExpireTime": EARLIER}, False),
        ({"state": "ERROR", "leaseExpireTime": EARLIER}, False),
        ({"state": "WHATEVER"}, False),
        ("PENDING", False),
        ([1], False),
    ],
)
def test_needs_work_extension(delivery: object, expected: bool) -> None:
    doc = {**EXTENSION, "delivery": delivery} if delivery is not None else dict(EXTENSION)
    assert work(doc, Contract.EXTENSION) is expected


# --- what to read ---------------------------------------------------------------------


def test_uids_of_collects_every_valid_uid() -> None:
    doc = {"toUids": ["a", "b", 3, None, "x/y", "", "..", "__id__"], "ccUids": ["b", "c"],
           "bccUids": "d", "to": ["e"]}  # fmt: skip
    assert uids_of(doc) == {"a", "b", "c"}
    assert uids_of({"toUids": ["\ud800"]}) == set() and uids_of({}) == set()


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"template": {"name": "welcome"}}, {"welcome"}),
        ({"template": {"name": "a/b"}}, set()),
        ({"template": {"name": 3}}, set()),
        ({"template": "welcome"}, set()),
        ({}, set()),
    ],
)
def test_template_names(doc: Doc, names: set[str]) -> None:
    assert template_names(doc) == names


# --- the simple contract --------------------------------------------------------------


def test_simple_minimal_is_a_valid_submission_without_id() -> None:
    item = simple()
    assert item == {
        "to": ["a@example.com"], "cc": [], "bcc": [], "subject": "Hi", "html": "<p>x</p>",
        "attachments": [], "metadata": {"firestore": {"path": "mail/s", "contract": "simple"}},
    }  # fmt: skip
    message = parse_submitted(item)
    assert message.key is None and message.to == ("a@example.com",)


def test_simple_every_field() -> None:
    options = ContractOptions(default_from="App <app@example.com>", default_reply_to="r@x.com")
    doc = {**SIMPLE, "to": ["a@example.com", "b@example.com"], "cc": "c@example.com",
           "bcc": ["d@example.com", ""], "reply_to": "help@example.com", "type": "welcome",
           "account": "marketing", "state": None, "delivery": None,
           "message": {"html": "<p>x</p>", "text": "x", "attachments": [
               {"filename": "a.txt", "content": "hello"}]}}  # fmt: skip
    item = to_message(doc, Contract.SIMPLE, path="mail/s", options=options)
    assert item["to"] == ["a@example.com", "b@example.com"]
    assert (item["cc"], item["bcc"]) == (["c@example.com"], ["d@example.com"])
    assert item["reply_to"] == "help@example.com" and item["from"] == "App <app@example.com>"
    assert item["text"] == "x" and item["account"] == "marketing"
    assert item["attachments"] == [{"filename": "a.txt", "content_type": "text/plain",
                                    "content": base64.b64encode(b"hello").decode()}]  # fmt: skip
    assert item["metadata"]["firestore"]["type"] == "welcome"
    message = parse_submitted(item)
    assert message.account == "marketing" and message.attachments[0].content == b"hello"


def test_simple_default_reply_to_applies() -> None:
    options = ContractOptions(default_reply_to="r@example.com")
    assert (
        to_message(SIMPLE, Contract.SIMPLE, path="p", options=options)["reply_to"]
        == "r@example.com"
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"to": None}, "to: required"),
        ({"to": []}, "to: required"),
        ({"to": " "}, "to: required"),
        ({"to": 5}, r"to: must be a string or a list of strings \(got a number\)"),
        ({"to": ["a@x.com", {"a": 1}]}, r"to\[1\]: must be a string \(got a map\)"),
        ({"subject": None}, "subject: required"),
        ({"subject": ["s"]}, r"subject: must be a string \(got a list\)"),
        ({"message": None}, r"message: must be a map \(got null\)"),
        ({"message": "hi"}, r"message: must be a map \(got a string\)"),
        ({"message": {"text": "only text"}}, "message.html: required"),
        ({"message": {"html": "  "}}, "message.html: must not be empty"),
        ({"message": {"html": 1.5}}, r"message.html: must be a string \(got a number\)"),
        (
            {"message": {"html": "x", "text": True}},
            r"message.text: must be a string \(got a boolean\)",
        ),
        ({"cc": {"a": "b"}}, "cc: must be a string or a list of strings"),
        ({"reply_to": 1}, "reply_to: must be a string"),
        ({"type": 1}, "type: must be a string"),
        ({"account": ""}, "account: must not be empty"),
        ({"account": 7}, "account: must be a string"),
        ({"message": {"html": "x", "attachments": "a.pdf"}}, "message.attachments: must be a list"),
    ],
)
def test_simple_bad_fields_are_named(fields: Doc, reason: str) -> None:
    with invalid(reason):
        simple(**fields)


# --- the extension contract -----------------------------------------------------------


def test_extension_every_field() -> None:
    options = ContractOptions(default_from="app@example.com", default_reply_to="r@example.com")
    fields: Doc = {
        "to": ["a@example.com", "b@example.com"],
        "cc": "c@example.com",
        "bcc": ["d@example.com"],
        "from": "Shop <shop@example.com>",
        "replyTo": "help@example.com",
        "headers": {"X-Order": "42", "X-Count": 3, "X-Ratio": 2.0},
        "categories": ["receipts", "orders"],
        "account": "eu",
        "message": {
            "subject": "Receipt",
            "text": "t",
            "html": "<p>h</p>",
            "amp": "<html ⚡4email>",
            "messageId": "<order-42@shop.example>",
            "attachments": [{"filename": "r.pdf", "path": "https://files.example.com/r.pdf"}],
        },
    }
    item = extension(options=options, **fields)
    assert item["from"] == "Shop <shop@example.com>" and item["reply_to"] == "help@example.com"
    assert item["headers"] == {"X-Order": "42", "X-Count": "3", "X-Ratio": "2"}
    assert (item["subject"], item["text"], item["html"]) == ("Receipt", "t", "<p>h</p>")
    assert item["attachments"] == [
        {
            "filename": "r.pdf",
            "content_type": "application/pdf",
            "url": fields["message"]["attachments"][0]["path"],
        }
    ]
    assert item["metadata"]["firestore"] == {
        "path": "mail/e",
        "contract": "extension",
        "categories": ["receipts", "orders"],
        "messageId": "<order-42@shop.example>",
        "ignored": ["message.amp"],
    }
    message = parse_submitted(item)
    assert message.account == "eu" and message.headers["X-Order"] == "42"


@pytest.mark.parametrize("value", [None, ""])
def test_extension_from_and_reply_to_fall_back_to_the_defaults(value: str | None) -> None:
    options = ContractOptions(default_from="app@example.com", default_reply_to="r@example.com")
    fields: Doc = {"from": value, "replyTo": value}
    item = extension(options=options, **fields)
    assert (item["from"], item["reply_to"]) == ("app@example.com", "r@example.com")
    assert "from" not in extension() and "reply_to" not in extension()


def test_extension_uids_are_resolved_and_missing_ones_skipped() -> None:
    users: Doc = {"u1": {"email": "one@example.com"}, "u2": {"email": " "}, "u3": {"name": "x"},
                  "u4": {"email": 42}, "u5": "not a map"}  # fmt: skip
    item = extension(users, to=None, toUids=["u1", "u2", "gone", "u2"], ccUids=["u3", "u4"],
                     bccUids=["u5", "u1"])  # fmt: skip
    assert item["to"] == ["one@example.com"] and item["cc"] == []
    assert item["bcc"] == ["one@example.com"]
    assert item["metadata"]["firestore"]["missingUids"] == ["u2", "gone", "u3", "u4", "u5"]


def test_extension_with_no_recipient_left_names_the_missing_uids() -> None:
    with invalid(
        r"no recipients: .* uid\(s\) 'gone', 'x' have no document with an email in 'people'"
    ):
        extension(options=ContractOptions(users_collection="people"), to=None, toUids=["gone", "x"])
    with invalid("no recipients: to, cc, bcc and their uids give no address$"):
        extension(to=[], cc="")


def test_extension_cc_only_is_refused_with_the_reason() -> None:
    with invalid("to: no recipient; mailgate needs at least one To address"):
        extension(to=None, cc="c@example.com")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"message": None}, r"message: must be a map \(got null\)"),
        ({"message": [1]}, "message: must be a map"),
        ({"message": {"text": "x"}}, "message.subject: required"),
        ({"message": {"subject": 1, "text": "x"}}, "message.subject: must be a string"),
        ({"message": {"subject": "s"}}, "message: text or html is required"),
        (
            {"message": {"subject": "s", "text": "", "html": ""}},
            "message: text or html is required",
        ),
        ({"message": {"subject": "s", "html": {"a": 1}}}, "message.html: must be a string"),
        ({"message": {"subject": "s", "text": "x", "messageId": 5}}, "message.messageId: must be"),
        ({"toUids": "u1"}, r"toUids: must be a list of user ids \(got a string\)"),
        ({"ccUids": [None]}, r"ccUids\[0\]: must be a user id string \(got null\)"),
        ({"bccUids": ["a/b"]}, r"bccUids\[0\]: 'a/b' is not a user id"),
        ({"headers": ["X-A: 1"]}, "headers: must be a map"),
        ({"headers": {"X-A": ["1", "2"]}}, r"headers.X-A: must be a string \(got a list\)"),
        ({"headers": {"X-A": None}}, r"headers.X-A: must be a string \(got null\)"),
        ({"headers": {"X-A": 10**5000}}, "headers.X-A: the number is too large for a header"),
        ({"categories": "one"}, "categories: must be a list of strings"),
        ({"categories": ["a", 2]}, r"categories\[1\]: must be a string"),
        ({"from": ["a@x.com"]}, "from: must be a string"),
        ({"replyTo": {"address": "a@x.com"}}, "replyTo: must be a string"),
        ({"template": "welcome"}, r"template: must be a map \(got a string\)"),
        ({"template": {"data": {}}}, "template.name: required"),
        ({"template": {"name": ""}}, "template.name: must not be empty"),
    ],
)
def test_extension_bad_fields_are_named(fields: Doc, reason: str) -> None:
    with invalid(reason):
        extension(**fields)


def test_huge_values_pass_through_quickly_for_submission_to_judge() -> None:
    huge = "x" * 5_000_000
    started = time.process_time()  # CPU time: no other process's load counts
    item = extension(message={"subject": huge, "text": huge, "html": huge})
    assert time.process_time() - started < 10 and len(item["subject"]) == 5_000_000


# --- attachments ----------------------------------------------------------------------


def attach(**att: Any) -> dict[str, Any]:
    item = extension(message={"subject": "s", "text": "t", "attachments": [att]})
    parse_submitted(item)  # what comes out is what submission accepts
    out: dict[str, Any] = item["attachments"][0]
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("content", "encoding", "data"),
    [
        ("héllo", None, "héllo".encode()),
        ("héllo", "utf-8", "héllo".encode()),
        ("héllo", "UTF8", "héllo".encode()),
        ("aGVs\nbG8=", "base64", b"hello"),
        ("aGVsbG8", "base64", b"hello"),  # no padding
        ("-_8", "base64", b"\xfb\xff"),  # URL-safe alphabet
        ("-_8", "base64url", b"\xfb\xff"),
        ("00ff10", "hex", b"\x00\xff\x10"),
        ("é\u0141", "latin1", b"\xe9\x41"),  # as Node: the low byte
        ("é", "binary", b"\xe9"),
        ("é", "ascii", b"\xe9"),
        ("hé", "utf16le", "hé".encode("utf-16-le")),
        ("h", "ucs-2", b"h\x00"),
        (b"\x00\x01", None, b"\x00\x01"),  # a Firestore Bytes field
        (b"\x00\x01", "hex", b"\x00\x01"),  # the encoding is for strings only
    ],
)
def test_attachment_content_encodings(
    content: str | bytes, encoding: str | None, data: bytes
) -> None:
    att = attach(filename="f.bin", content=content, encoding=encoding)
    assert att == {"filename": "f.bin", "content_type": "application/octet-stream",
                   "content": b64(data)}  # fmt: skip


@pytest.mark.parametrize(
    ("att", "reason"),
    [
        ({"content": "zz", "encoding": "hex"}, r"attachments\[0\].content: not valid 'hex'"),
        ({"content": "a$b", "encoding": "base64"}, "content: not valid 'base64'"),
        ({"content": "\ud800", "encoding": "utf-8"}, "content: not valid 'utf-8'"),
        ({"content": "x", "encoding": "rot13"}, "encoding: 'rot13' is not one of base64, hex"),
        ({"content": "x", "encoding": 64}, "encoding: must be a string"),
        ({"content": 12}, r"content: must be a string or bytes \(got a number\)"),
        (
            {"content": "x", "path": "https://x.example/a"},
            "give exactly one of content, path or href",
        ),
        ({"filename": "a"}, "give exactly one of content, path or href"),
        ({"raw": "Content-Type: text/plain\r\n\r\nx"}, r"\.raw: a raw MIME part is not supported"),
        ({"path": "/etc/passwd"}, r"path: '/etc/passwd' is not an http\(s\) or data: URL; local"),
        ({"path": "file:///etc/passwd"}, "local files cannot be attached"),
        ({"path": "C:\\secrets.txt"}, "local files cannot be attached"),
        ({"href": "ftp://x.example/a"}, r"href: 'ftp://x.example/a' is not an http\(s\)"),
        ({"path": "http://[::1"}, "local files cannot be attached"),
        ({"path": ""}, "path: must not be empty"),
        ({"path": 5}, "path: must be a string"),
        ({"path": "data:text/plain;base64"}, "a data: URL needs a comma"),
        ({"path": "data:;base64,@@"}, "the data: URL's content is not valid"),
        ({"content": "x", "filename": 3}, "filename: must be a string"),
        ({"content": "x", "contentType": ["a/b"]}, "contentType: must be a string"),
        ({"content": "x", "cid": 1}, "cid: must be a string"),
        (
            {"content": "x", "contentDisposition": "evil"},
            "contentDisposition: must be attachment or inline",
        ),
    ],
)
def test_attachment_problems_are_named(att: Doc, reason: str) -> None:
    with invalid(reason):
        extension(message={"subject": "s", "text": "t", "attachments": [att]})


def test_attachment_not_a_map() -> None:
    with invalid(r"message.attachments\[1\]: must be a map"):
        extension(message={"subject": "s", "text": "t", "attachments": [{"content": "x"}, "a"]})


def test_attachment_urls_names_and_types() -> None:
    logo = "https://cdn.example.com/img/logo%20big.png?x=1"
    assert attach(href=logo, cid="logo") == {
        "filename": "logo big.png",
        "content_type": "image/png",
        "url": logo,
        "cid": "logo",
    }
    assert attach(path="HTTP://example.com/", contentType="Text/CSV; charset=utf-8") == {
        "filename": "attachment",
        "content_type": "text/csv",
        "url": "HTTP://example.com/",
    }
    pdf = attach(url="https://x.example/r", filename="r.pdf", content_type="application/pdf")
    assert pdf["content_type"] == "application/pdf" and pdf["filename"] == "r.pdf"


def test_attachment_data_urls_become_content() -> None:
    assert attach(path="data:text/plain;base64,aGk=") == {
        "filename": "attachment", "content_type": "text/plain", "content": b64(b"hi")}  # fmt: skip
    assert attach(path="data:,a%20b", filename="n.txt")["content"] == b64(b"a b")


def test_attachment_disposition_inline_needs_a_cid() -> None:
    def ignored(att: Doc) -> list[str]:
        item = extension(message={"subject": "s", "text": "t", "attachments": [att]})
        return list(item["metadata"]["firestore"].get("ignored", []))

    assert ignored({"content": "x", "cid": "c", "contentDisposition": "inline"}) == []
    assert ignored({"content": "x", "contentDisposition": "Attachment"}) == []
    assert ignored({"content": "x", "contentDisposition": "inline"}) == [
        "message.attachments[0].contentDisposition"]  # fmt: skip


# --- templates ------------------------------------------------------------------------


def _deep(levels: int) -> Doc:
    doc: Doc = {}
    for _ in range(levels):
        doc = {"a": doc}
    return doc


WELCOME = {
    "subject": "Hi {{name}} & {{company}}",
    "html": "<p>Hi {{name}}</p>{{> footer}}",
    "text": "Hi {{name}}\n{{> footer}}",
    "amp": "<p>{{name}}</p>",
}
FOOTER = {"partial": True, "html": "<i>{{company}}</i>", "text": "-- {{company}}"}


def render(
    source: str | None = None,
    data: Any = None,
    partials: dict[str, str] | None = None,
    **parts: Any,
) -> dict[str, Any]:
    """An extension document with template ``t``: ``source`` as its html (and a text
    part, so that an html rendering empty is still a message)."""
    template = {"text": "t", **({"html": source} if source is not None else {}), **parts}
    templates: dict[str, Doc] = {"t": template}
    for name, html in (partials or {}).items():
        templates[name] = {"partial": True, "html": html}
    return extension(templates=templates, message=None,
                     template={"name": "t", "data": data if data is not None else {}})  # fmt: skip


def html(source: str, data: Any = None, partials: dict[str, str] | None = None) -> str:
    out: str = render(source, data, partials).get("html", "")
    return out


def test_template_parts_render_as_the_extension_does() -> None:
    data = {"name": "<Ann>", "company": "A&B"}
    item = extension(templates={"welcome": WELCOME, "footer": FOOTER}, message=None,
                     template={"name": "welcome", "data": data})  # fmt: skip
    assert item["subject"] == "Hi <Ann> & A&B"  # noEscape
    assert item["text"] == "Hi <Ann>\n-- A&B"  # noEscape
    assert item["html"] == "<p>Hi &lt;Ann&gt;</p><i>A&amp;B</i>"
    assert item["metadata"]["firestore"]["ignored"] == ["message.amp"]
    parse_submitted(item)


def test_template_parts_override_the_message_and_missing_ones_keep_it() -> None:
    item = extension(templates={"t": {"html": "<b>{{x}}</b>", "text": ""}},
                     message={"subject": "from the message", "text": "message text", "html": "m"},
                     template={"name": "t", "data": {"x": 1}})  # fmt: skip
    assert (item["subject"], item["html"]) == ("from the message", "<b>1</b>")
    assert item["text"] == "message text"  # an empty template part is not a part
    item = extension(templates={"t": {"subject": "{{x}}", "html": "h"}}, message=None,
                     template={"name": "t"})  # fmt: skip
    assert item["subject"] == "" and item["html"] == "h"  # renders empty: replaces


def test_a_template_without_subject_gives_an_empty_subject() -> None:
    assert render("<p>x</p>")["subject"] == ""


def test_template_attachments_render_strictly_and_replace_the_message_ones() -> None:
    attachment = {"filename": "{{order}}.pdf", "path": "https://x.example/{{order}}.pdf"}
    template = {"text": "t", "attachments": [attachment]}
    item = extension(templates={"t": template},
                     message={"subject": "s", "attachments": [{"content": "old"}]},
                     template={"name": "t", "data": {"order": "A&1"}})  # fmt: skip
    assert item["attachments"] == [{"filename": "A&1.pdf", "content_type": "application/pdf",
                                    "url": "https://x.example/A&1.pdf"}]  # fmt: skip
    with invalid(r"template 't' attachments\[0\].filename: Could not find variable 'order'"):
        extension(templates={"t": template}, message=None, template={"name": "t"})
    with invalid("template 't' attachments: must be a list"):
        extension(templates={"t": {"text": "t", "attachments": {"a": 1}}}, template={"name": "t"})


@pytest.mark.parametrize(
    ("source", "data", "out"),
    [
        (
            "{{a}}|{{b}}|{{c}}|{{d}}|{{e}}",
            {"a": 2.0, "b": 2.5, "c": True, "d": None, "e": 10**3},
            "2|2.5|true||1000",
        ),
        (
            "{{list}}|{{map}}|{{list.length}}|{{s.length}}",
            {"list": [1, None, "x"], "map": {"a": 1}, "s": "abc"},
            "1,,x|[object Object]|3|3",
        ),
        (
            "{{#each xs}}{{@index}}:{{this}}{{#if @first}}!{{/if}} {{/each}}",
            {"xs": ["a", "b"]},
            "0:a! 1:b ",
        ),
        ("{{#each m}}{{@key}}={{this}};{{/each}}", {"m": {"k": "v"}}, "k=v;"),
        ("{{#each s}}x{{else}}none{{/each}}", {"s": "abc"}, "none"),
        ("{{#if a}}yes{{else}}no{{/if}}{{#unless a}}!{{/unless}}", {"a": 0}, "no!"),
        (
            "{{#with user}}{{name}} of {{../org}} in {{@root.city}}{{/with}}",
            {"user": {"name": "Ann"}, "org": "ACME", "city": "Oslo"},
            "Ann of ACME in Oslo",
        ),
        (
            "{{lookup tags 1}} {{lookup user 'name'}} {{tags.[0]}}",
            {"tags": ["a", "b"], "user": {"name": "N"}},
            "b N a",
        ),
        (
            "{{{raw}}} {{&raw}} {{raw}}",
            {"raw": "<b>'\"`=</b>"},
            "<b>'\"`=</b> <b>'\"`=</b> &lt;b&gt;&#x27;&quot;&#x60;&#x3D;&lt;/b&gt;",
        ),
        ("{{! a comment }}{{missing}}{{a.b.c}}.", {"a": {"b": None}}, "."),
        ("a  {{~x~}}  b", {"x": "X"}, "aXb"),
        (
            "<ul>\n  {{#each xs}}\n  <li>{{this}}</li>\n  {{/each}}\n</ul>",
            {"xs": [1, 2]},
            "<ul>\n  <li>1</li>\n  <li>2</li>\n</ul>",
        ),
        (
            "{{when}} {{blob}} {{ref}}",
            {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "blob": b"\x01", "ref": object()},
            "2026-01-02T03:04:05Z AQ&#x3D;&#x3D; ",
        ),
        ("{{{{raw}}}}{{kept}}{{{{/raw}}}}", {}, "{{kept}}"),
        ("{{> p greeting='Hey'}}", {"name": "N"}, "Hey N"),
    ],
)
def test_handlebars_features(source: str, data: Doc, out: str) -> None:
    assert html(source, data, {"p": "{{greeting}} {{name}}"}) == out


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{#if a}}open", "template 't' html: syntax error on line 1"),
        ("x\n{{#each}", "syntax error on line 2"),
        ("{{> nope}}", "The partial nope could not be found"),
        ("{{shout name}}", "Could not find property shout"),
        ("{{> bad}}", "partial 'bad': syntax error"),
    ],
)
def test_template_errors_name_the_template_and_part(source: str, reason: str) -> None:
    with invalid(reason):
        html(source, {"a": 1}, {"bad": "{{#if}}"})


@pytest.mark.parametrize(
    ("fields", "templates", "reason"),
    [
        ({"template": {"name": "nope"}}, {}, "template.name: no template 'nope' in 'templates'"),
        ({"template": {"name": "p"}}, {"p": {"partial": "yes", "html": "x"}}, "no template 'p'"),
        (
            {"template": {"name": "t", "data": "x"}},
            {"t": {"html": "x"}},
            "template.data: must be a map",
        ),
        ({"template": {"name": "t"}}, {"t": {"html": 5}}, "template 't' html: must be a string"),
        ({"template": {"name": "t"}}, {"t": {"subject": "x"}}, "message: text or html is required"),
        (
            {"template": {"name": "t", "data": _deep(70)}},
            {"t": {"html": "x"}},
            "template.data: nested deeper than 64 levels",
        ),
    ],
)
def test_template_document_problems(fields: Doc, templates: dict[str, Doc], reason: str) -> None:
    with invalid(reason):
        extension(templates=templates, message=None, **fields)


def test_a_template_needs_a_templates_collection() -> None:
    with invalid("template: no templates collection is configured"):
        extension(options=ContractOptions(), templates={"t": {"html": "x"}}, template={"name": "t"})


# --- hostile templates ----------------------------------------------------------------

_RUN = "str(__import__('os').environ.setdefault('MAILGATE_PWNED', '1'))"
_RUN2 = _RUN.replace("'", '"')
ESCAPE_ATTEMPTS = [
    "{{[a' + " + _RUN + " + ']}}",
    "{{#each [x' + " + _RUN + " + ']}}{{/each}}",
    '{{lookup this "\\\\" + ' + _RUN + ' + "\\\\"}}',
    "{{lookup this '\\\\' + " + _RUN2 + " + '\\\\'}}",
    '{{> [p" + ' + _RUN + ' + "]}}',
    "{{x\n+1}}",
]


@pytest.mark.parametrize("source", ESCAPE_ATTEMPTS)
def test_a_template_cannot_break_out_of_the_generated_code(source: str) -> None:
    """Refused by the parse tree check (or the parser) before any code is generated."""
    os.environ.pop("MAILGATE_PWNED", None)
    with invalid("are not allowed in (names|strings)|syntax error"):
        html(source, {"a": 1})
    assert "MAILGATE_PWNED" not in os.environ


@pytest.mark.parametrize(
    "source",
    [
        "{{x.format}}", "{{x.__class__}}", "{{[__class__]}}", "{{x.[__class__].[__mro__]}}",
        "{{lookup x '__class__'}}", "{{lookup this '__init__'}}", "{{#with x}}{{upper}}{{/with}}",
        "{{#each x}}{{this.format}}{{/each}}", "{{@root.__class__}}", "{{../__class__}}",
        "{{list.pop}}", "{{map.items}}", "{{map.keys}}",
    ],
)  # fmt: skip
def test_names_reach_data_never_python_attributes(source: str) -> None:
    data = {"x": "{0.__init__.__globals__}", "list": [1], "map": {"k": 1}}
    assert html(source, data) == ""


@pytest.mark.parametrize(
    "code",
    [
        "import os",
        "from os import system",
        "x = 1",
        "def render(context):\n    return __import__('os')",
        "def render(context):\n    return context.__class__",
        "def render(context):\n    while True:\n        pass",
        "@partial\ndef render(context):\n    return 1",
        "def evil(context):\n    return 1",
    ],
)
def test_generated_code_outside_the_allowlist_is_refused(code: str) -> None:
    """The second line of defence, behind the parse tree check: code pybars would not
    generate is refused before it runs."""
    from mailgate.sources.firestore.templates import TemplateError as _TemplateError
    from mailgate.sources.firestore.templates import _checked_code

    with pytest.raises(_TemplateError, match="could not be compiled safely"):
        _checked_code(ast.parse(code))


def test_plain_pybars_would_have_run_that_code() -> None:
    """Why the sandbox exists: pybars4 as shipped pastes a bracketed name into Python."""
    from pybars import Compiler

    os.environ.pop("MAILGATE_PWNED", None)
    with contextlib.suppress(Exception):  # "Could not find variable", after running it
        Compiler().compile(ESCAPE_ATTEMPTS[0])({})
    assert os.environ.pop("MAILGATE_PWNED", None) == "1"


@pytest.mark.parametrize(
    ("source", "partials", "reason"),
    [
        ("{{#each a}}{{#each ../a}}{{#each ../../a}}x{{/each}}{{/each}}{{/each}}", {},
         "too much work"),
        ("{{> p}}", {"p": "{{> p}}"}, "nest too deeply"),
        ("{{> p20}}", {f"p{i}": f"{{{{> p{i - 1}}}}}{{{{> p{i - 1}}}}}" for i in range(1, 21)}
         | {"p0": "x"}, "too much work"),
        ("{{#each a}}{{../big}}{{/each}}", {}, "too much work"),
        ("{{big}}{{big}}{{big}}", {}, r"renders to 1500000 characters, over the limit of 1048576"),
    ],
)  # fmt: skip
def test_work_and_output_are_bounded(source: str, partials: dict[str, str], reason: str) -> None:
    data = {"a": list(range(300)), "big": "x" * 500_000}
    started = time.process_time()  # CPU time: no other process's load counts
    with invalid(reason):
        html(source, data, partials)
    assert time.process_time() - started < 30  # about 0.3 s; minutes without the bounds


def test_a_broken_template_is_parsed_once_however_many_documents_name_it() -> None:
    from mailgate.sources.firestore.templates import _compile

    source = f"{{{{#if a}}}}never closed {time.monotonic_ns()}"
    before = _compile.cache_info()
    for _ in range(3):
        with invalid("syntax error on line 1 near '{{#if a}}never closed"):
            html(source)
    after = _compile.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)


def test_template_size_is_bounded() -> None:
    with invalid(f"over the limit of {MAX_TEMPLATE_CHARS}"):
        html("x" * (MAX_TEMPLATE_CHARS + 1))
    with invalid(f"inside {{{{ }}}}, over the limit of {MAX_TAG_CHARS}"):
        html("{{a b c d e f g h i}}" * (MAX_TAG_CHARS // 18))
    assert MAX_RENDERED_CHARS == 1024 * 1024


def test_whitespace_control_cannot_backtrack_for_ever() -> None:
    """pybars' own regex needs exponential time on a line of block tags and spaces that
    does not end in a newline (minutes for this one)."""
    line = "\n" + "{{#a}}" * 12 + " " * 20 + "{{/a}}" * 12 + " " * 20
    started = time.process_time()  # CPU time: no other process's load counts
    assert html(line.replace("}}{{", "}}" + " " * 20 + "{{") + "x", {"a": True}).endswith("x")
    assert html(" " * 100_000 + "{{~x}}", {"x": "y"}) == "y"
    assert time.process_time() - started < 30  # milliseconds; pybars' regex takes hours


# --- anything at all ------------------------------------------------------------------

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=8) | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["subject", "text", "html", "amp", "attachments", "name", "data",
                         "content", "path", "href", "encoding", "filename", "email", "state",
                         "success", "leaseExpireTime", "partial", "x"]), inner, max_size=5),
    max_leaves=12,
)  # fmt: skip
_KEYS = ["to", "cc", "bcc", "toUids", "ccUids", "bccUids", "from", "replyTo", "reply_to",
         "headers", "categories", "message", "template", "subject", "state", "delivery", "type",
         "account", "retryCount"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8),
       users=st.dictionaries(st.text(max_size=3), _VALUES, max_size=3),
       templates=st.dictionaries(st.text(max_size=3), _VALUES, max_size=3))  # fmt: skip
def test_any_document_gives_a_message_or_a_reason(doc: Doc, users: Doc, templates: Doc) -> None:
    contract = detect(doc)
    for each in Contract:
        needs_work(doc, each, now=NOW, max_retry_count=3)
        uids_of(doc), template_names(doc)
        try:
            item = to_message(doc, each, path="mail/x", options=OPTIONS, users=users,
                              templates=templates)  # fmt: skip
        except InvalidDocument as exc:
            assert str(exc)
        else:
            assert "id" not in item and item["metadata"]["firestore"]["contract"] == each.value
    assert contract in (None, *Contract)
