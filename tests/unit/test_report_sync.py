"""The delivery-report sync's pure parts: one report from one final event, reading the
endpoint's ``next_sync_after``, and the ``reports`` settings' rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from mailgate.reports.sync import MAX_WAIT, next_sync_wait, report_body, report_item
from mailgate.settings import Settings
from mailgate.store.outbox import OutboxEvent
from tests.builders import NOW

FAILED = {
    "state": "failed",
    "attempt": 2,
    "code": 550,
    "enhanced_code": "5.1.1",
    "failure_class": "recipient",
    "text": "5.1.1 no such user",
    "account": "default",
    "recipients": {"a@example.com": {"status": "failed", "code": 550, "text": "no such user"}},
    "next_attempt_at": None,
}


def _event(kind: str, payload: dict[str, Any], message_id: str = "m1") -> OutboxEvent:
    return OutboxEvent(7, kind, "acme", message_id, None, "smtp", payload, NOW)


def test_a_failed_message_reports_when_and_why() -> None:
    item = report_item(_event("message.failed", FAILED), {"m1": ("order-9", {"o": 9})})
    stamp = NOW.isoformat().replace("+00:00", "Z")
    assert item == {
        "id": "m1", "event_id": 7, "key": "order-9", "tenant": "acme", "state": "failed",
        "sent_ts": None, "error_ts": stamp, "error": "5.1.1 no such user", "reason": None,
        "code": 550, "enhanced_code": "5.1.1", "failure_class": "recipient", "attempt": 2,
        "account": "default", "source": "smtp", "recipients": FAILED["recipients"],
        "metadata": {"o": 9},
    }  # fmt: skip


def test_sent_cancelled_and_expired_messages() -> None:
    sent = report_item(_event("message.sent", {**FAILED, "state": "sent", "text": "ok"}), {})
    stamp = NOW.isoformat().replace("+00:00", "Z")
    assert (sent["sent_ts"], sent["error_ts"], sent["error"]) == (stamp, None, None)
    assert sent["key"] is None and sent["metadata"] is None  # the message is gone
    cancelled = report_item(_event("message.cancelled", {"state": "cancelled"}), {})
    assert (cancelled["state"], cancelled["error"], cancelled["sent_ts"]) == (
        "cancelled", "cancelled", None,
    )  # fmt: skip
    assert cancelled["error_ts"] == stamp and cancelled["code"] is None
    expired_payload = {**FAILED, "text": None, "reason": "expired"}
    expired = report_item(_event("message.failed", expired_payload), {})
    assert (expired["error"], expired["reason"]) == ("expired", "expired")


def test_the_body_is_one_delivery_report_list() -> None:
    events = [_event("message.sent", {"state": "sent"}, f"m{i}") for i in range(3)]
    body = json.loads(report_body(events, {}))
    assert list(body) == ["delivery_report"]
    assert [i["id"] for i in body["delivery_report"]] == ["m0", "m1", "m2"]


@pytest.mark.parametrize(
    ("reply", "wait"),
    [
        ({"next_sync_after": 30}, 30.0),
        ({"next_sync_after": 2.5}, 2.5),
        ({"next_sync_after": "45"}, 45.0),
        ({"next_sync_after": "2026-11-21T12:00:30Z"}, 30.0),  # NOW is 12:00
        ({"next_sync_after": "2026-11-21T12:00:30+00:00"}, 30.0),
        ({"next_sync_after": "2026-11-21T13:00:30+01:00"}, 30.0),
        ({"next_sync_after": "2026-11-21T12:00:30"}, 30.0),  # no zone: UTC
        ({"next_sync_after": "2020-01-01T00:00:00Z"}, 0.0),  # past: now
        ({"next_sync_after": -5}, 0.0),
        ({"next_sync_after": 10**9}, MAX_WAIT),  # at most a day
        ({"next_sync_after": "2099-01-01T00:00:00Z"}, MAX_WAIT),
        ({"next_sync_after": "soon"}, None),
        ({"next_sync_after": True}, None),
        ({"next_sync_after": None}, None),
        ({"next_sync_after": [1]}, None),
        ({"ok": True}, None),
        ([1, 2], None),
        ("plain text", None),
    ],
)
def test_next_sync_after(reply: Any, wait: float | None) -> None:
    raw = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
    assert next_sync_wait(raw, NOW) == wait


def test_nan_is_no_wait() -> None:
    assert next_sync_wait(b'{"next_sync_after": NaN}', NOW) is None


def test_reports_settings_refuse_credentials_in_the_url_without_echoing_them() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(reports={"sync_url": "https://app:Url-Pw-5sD1@example.com/sync"})
    assert "must not hold credentials" in str(refused.value)
    assert "Url-Pw-5sD1" not in str(refused.value)


@pytest.mark.parametrize(
    ("reports", "error"),
    [
        ({"sync_url": "ftp://example.com/x"}, "http:// or https://"),
        ({"sync_url": "https:///nohost"}, "http:// or https://"),
        ({"sync_url": "http://x", "token": "t", "username": "u"}, "not both"),
        ({"sync_url": "http://x", "password": "p"}, "needs a username"),
        ({"batch": 0}, "greater than or equal to 1"),
    ],
)
def test_reports_settings_rules(reports: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Settings(reports=reports)


def test_reports_are_off_by_default_and_secrets_are_masked() -> None:
    assert Settings().reports.sync_url is None
    shown = Settings(reports={"sync_url": "http://x/s?k=1", "token": "Tk-Masked-1"}).model_dump(
        mode="json"
    )
    assert shown["reports"]["token"] == "**********"
