"""List-Unsubscribe (RFC 2369) and one-click (RFC 8058) from the submission to the wire."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import pytest

from mailgate.errors import InvalidMessage
from mailgate.mime import build_message
from tests.builders import parse_submitted, submitted

URL = "https://shop.example/unsubscribe?u=42&sig=abc"


def built_headers(**fields: Any) -> Any:
    message = parse_submitted(submitted(**fields))
    return message_from_bytes(build_message(message), policy=policy.default)


def test_url_mailto_and_one_click_round_trip() -> None:
    parsed = built_headers(
        list_unsubscribe={"url": URL, "mailto": "unsub@shop.example", "one_click": True}
    )
    assert parsed["List-Unsubscribe"] == f"<{URL}>, <mailto:unsub@shop.example>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_without_one_click_there_is_no_post_field() -> None:
    parsed = built_headers(list_unsubscribe={"mailto": "mailto:u@shop.example?subject=stop"})
    assert parsed["List-Unsubscribe"] == "<mailto:u@shop.example?subject=stop>"
    assert parsed["List-Unsubscribe-Post"] is None


def test_the_other_headers_are_as_submitted() -> None:
    parsed = built_headers(
        **{"from": "Shop Team <news@shop.example>"},
        reply_to="help@shop.example",
        headers={"X-Campaign": "spring"},
        list_unsubscribe={"url": URL},
    )
    assert parsed["From"] == "Shop Team <news@shop.example>"
    assert parsed["Reply-To"] == "help@shop.example"
    assert parsed["X-Campaign"] == "spring"
    assert parsed["Message-ID"].endswith("@shop.example>")  # on the sender's domain
    assert parsed["X-Mailgate-ID"] and parsed["Date"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({}, "url or mailto is required"),
        ({"url": "http://shop.example/u", "one_click": True}, "needs an https url"),
        ({"mailto": "u@shop.example", "one_click": True}, "needs an https url"),
        ({"url": "ftp://shop.example/u"}, "an http(s) URL"),
        ({"url": "https://shop.example/a b"}, "an http(s) URL"),
        ({"url": "https://shop.example/a>,<https://evil"}, "an http(s) URL"),
        ({"url": "https://shop.example/\r\nBcc: x@y"}, "an http(s) URL"),
        ({"mailto": "not an address"}, "mailto"),
        ({"url": "https://x/" + "a" * 800}, "at most 800"),
    ],
)
def test_bad_values_are_refused_naming_the_field(value: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match="list_unsubscribe") as caught:
        parse_submitted(submitted(list_unsubscribe=value))
    assert reason in str(caught.value)


def test_not_both_in_headers_and_list_unsubscribe() -> None:
    item = submitted(headers={"list-unsubscribe": f"<{URL}>"}, list_unsubscribe={"url": URL})
    with pytest.raises(InvalidMessage, match="not both"):
        parse_submitted(item)
