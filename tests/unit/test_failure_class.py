"""Classifying refusals (RFC 3463 enhanced codes) and honouring "try again in N"."""

from __future__ import annotations

import pytest

from mailgate.model import FailureClass as C
from mailgate.policy import failure_class, retry_after, split_enhanced


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("550 5.1.1 <x@example.com>: Recipient address rejected", C.INVALID_RECIPIENT),
        ("553 5.1.3 bad address syntax", C.INVALID_RECIPIENT),
        ("452 4.2.2 Mailbox full", C.MAILBOX_FULL),
        ("552 5.2.2 Over quota", C.MAILBOX_FULL),
        ("554 5.7.1 Message rejected as spam", C.POLICY),
        ("550 5.7.26 Unauthenticated email is not accepted (DMARC)", C.POLICY),
        ("421 4.7.0 Try again later, closing connection", C.THROTTLED),
        ("450 4.2.1 The user you are trying to contact is receiving mail too quickly", C.THROTTLED),
        ("451 4.7.1 Please try again later", C.THROTTLED),
        ("451 4.3.0 Rate limit exceeded", C.THROTTLED),
        ("535 5.7.8 Authentication credentials invalid", C.AUTH),
        ("530 5.7.0 Authentication required", C.AUTH),
        ("554 5.6.0 Message content rejected", C.CONTENT),
        ("552 5.3.4 Message size exceeds fixed limit", C.CONTENT),
        ("501 5.5.4 Syntax error in parameters", C.PROTOCOL),
        ("500 unrecognised command", C.PROTOCOL),
        ("451 4.3.0 Local error in processing", C.OTHER),
        ("554 Transaction failed", C.OTHER),
    ],
)
def test_replies_are_classed_by_enhanced_code_and_reply_code(reply: str, expected: C) -> None:
    code, text = int(reply[:3]), reply[4:]
    enhanced, _ = split_enhanced(text)
    assert failure_class(code, enhanced, text) is expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4.7.1 try again in 2 seconds", 2.0),
        ("4.3.2 Please retry in 5 minutes", 300.0),
        ("Try again after 1 hour", 3600.0),
        ("4.7.0 temporarily deferred, try again in 30s", 30.0),
        ("4.2.1 try again later", None),
        ("5.1.1 user unknown", None),
    ],
)
def test_retry_after_reads_what_the_server_asks_for(text: str, seconds: float | None) -> None:
    assert retry_after(text) == seconds
