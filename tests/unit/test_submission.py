"""Validation of submitted message JSON: every bad input gets a clear reason."""

import base64
from datetime import UTC, datetime

import pytest

from mailgate.errors import InvalidMessage
from mailgate.model import Priority
from tests.builders import NOW
from tests.builders import parse_submitted as parse
from tests.builders import submitted as good


def test_minimal_message_gets_defaults() -> None:
    m = parse(good())
    assert m.to == ("a@example.com",) and m.sender == "app@example.com"
    assert m.tenant == "t1" and m.priority is Priority.NORMAL and m.created_at == NOW
    assert m.message_id.startswith("<") and m.message_id.endswith("@example.com>")


def test_full_message() -> None:
    content = base64.b64encode(b"\x00\x01\xff").decode()
    m = parse(
        good(
            id="order-42",
            **{"from": "Shop <shop@example.com>"},
            to=["a@example.com", "B <b@example.com>"],
            cc=["c@example.com"],
            bcc=["d@example.com"],
            reply_to="help@example.com",
            html="<p>x</p>",
            headers={"X-Order": "42"},
            priority="high",
            send_at="2026-12-01T09:00:00+01:00",
            attachments=[
                {
                    "filename": "r.bin",
                    "content_type": "Application/Octet-Stream",
                    "content": content,
                }
            ],
            metadata={"order": 42},
        )
    )
    assert m.key == "order-42" and m.sender == "Shop <shop@example.com>"
    assert m.envelope_recipients == (
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    )
    assert m.attachments[0].content == b"\x00\x01\xff"
    assert m.attachments[0].content_type == "application/octet-stream"
    assert m.send_at == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert m.priority is Priority.HIGH and m.metadata == {"order": 42}


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"subject": "x", "text": "y"}, "to: field required"),
        (good(text=None), "text or html is required"),
        (good(to="not-an-address"), "to: 'not-an-address' is not a valid address"),
        (good(to=[]), "at least one recipient"),
        (good(subject="Hi\r\nBcc: victim@example.com"), "subject: line breaks"),
        (good(headers={"X-A": "1\nX-B: 2"}), "headers.X-A: line breaks"),
        (good(headers={"Bad Name": "1"}), "not a valid header name"),
        (good(headers={"Message-ID": "<x@y>"}), "set from the message fields"),
        (good(**{"from": "Evil\r\n <e@example.com>"}), "from: line breaks"),
        (good(attachments=[{"filename": "a", "content": "!!notbase64"}]), "not valid base64"),
        (good(attachments=[{"filename": "a", "url": "ftp://10.0.0.1/x"}]), "not http or https"),
        (
            good(attachments=[{"filename": "a", "content_type": "pdf", "content": ""}]),
            "not a MIME type",
        ),
        (good(priority="urgent"), "priority"),
        (good(send_at="2026-12-01T09:00:00"), "send_at"),
        (good(colour="red"), "colour: extra inputs are not permitted"),
        ("just a string", "message"),
    ],
)
def test_bad_input_says_what_is_wrong(item: object, reason: str) -> None:
    with pytest.raises(InvalidMessage) as exc:
        parse(item)
    assert reason in str(exc.value)


def test_size_limit_counts_encoded_attachments() -> None:
    content = base64.b64encode(b"x" * 3000).decode()
    item = good(attachments=[{"filename": "a", "content": content}])
    assert parse(item, max_message_size=10_000).attachments
    with pytest.raises(InvalidMessage, match="over the limit of 4000"):
        parse(item, max_message_size=4000)


def test_recipient_limit() -> None:
    with pytest.raises(InvalidMessage, match="3 recipients, over the limit of 2"):
        parse(good(to=["a@example.com", "b@example.com"], cc=["c@example.com"]), max_recipients=2)


@pytest.mark.parametrize(
    "address", ["dev@localhost", "Bob <bob@app.local>", "ü@example.com", "x@sub.example.test"]
)
def test_development_and_international_addresses_are_accepted(address: str) -> None:
    assert parse(good(to=address)).to == (address,)
