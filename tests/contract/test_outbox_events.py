"""Outbox events (issue 7), on both engines: every reportable change writes one event in
its own transaction, with its kind, tenant, subject and source, and a payload complete
enough that a consumer never has to read the message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from mailgate.model import Attempt, FailureClass, Outcome, RecipientResult, State
from mailgate.policy import Decision
from mailgate.store import Database, InboxStore, QueueStore
from mailgate.store.inbox import CapturedRecord
from mailgate.store.schema import events
from tests.builders import NOW, make_message


async def _events(database: Database) -> list[dict[str, Any]]:
    async with database.read() as conn:
        rows = await conn.execute(select(events).order_by(events.c.id))
        return [dict(r) for r in rows.mappings()]


async def test_a_message_reports_queued_then_each_outcome(database: Database) -> None:
    queue = QueueStore(database)
    message = make_message(tenant="acme", to=("a@example.com", "b@example.com"))
    await queue.enqueue([message], NOW)
    [job] = await queue.lease("w", NOW, 1, 60, budget=lambda t, a: None)
    refused = RecipientResult(Outcome.FAILED, 550, "5.1.1 no such user")
    accepted = RecipientResult(Outcome.SENT, 250, "ok")
    attempt = Attempt(NOW, "smtp", 250, "2.0.0", "ok", 12,
                      {"a@example.com": accepted, "b@example.com": refused},
                      None, account="default")  # fmt: skip
    assert await queue.record(job, "w", attempt, Decision(State.SENT, (), 1, None))

    queued, sent, rcpt = await _events(database)
    for event in (queued, sent, rcpt):
        assert (event["tenant"], event["message_id"], event["source"]) == (
            "acme",
            message.id,
            "rest",
        )
        assert event["inbox_id"] is None
    assert (queued["kind"], queued["payload"]) == ("message.queued", {"state": "queued"})
    assert sent["kind"] == "message.sent"
    assert sent["payload"] == {
        "state": "sent", "attempt": 1, "code": 250, "enhanced_code": "2.0.0",
        "failure_class": None, "text": "ok", "account": "default", "next_attempt_at": None,
        "message_id_header": message.message_id,
        "recipients": {
            "a@example.com": {"status": "sent", "code": 250, "text": "ok"},
            "b@example.com": {"status": "failed", "code": 550, "text": "5.1.1 no such user"},
        },
    }  # fmt: skip
    assert rcpt["kind"] == "recipient.failed"
    assert rcpt["payload"] == {"recipient": "b@example.com", "code": 550,
                               "text": "5.1.1 no such user", "attempt": 1}  # fmt: skip


async def test_deferral_waiting_and_cancel_are_reported(database: Database) -> None:
    queue = QueueStore(database)
    message = make_message()
    await queue.enqueue([message], NOW)
    [job] = await queue.lease("w", NOW, 1, 60, budget=lambda t, a: None)
    later = NOW + timedelta(minutes=2)
    busy = Attempt(NOW, "smtp", 451, "4.3.0", "busy", 5, {}, FailureClass.OTHER)
    await queue.record(job, "w", busy, Decision(State.DEFERRED, job.pending, 0, later))
    [job] = await queue.lease("w", later, 1, 60, budget=lambda t, a: None)
    hold = later + timedelta(minutes=1)
    await queue.release(job, "w", hold, "account 'x' is disabled", now=later)
    await queue.cancel(message.id, "default", later)

    kinds = [(e["kind"], e["payload"].get("state")) for e in await _events(database)]
    assert kinds == [
        ("message.queued", "queued"),
        ("message.deferred", "deferred"),
        ("message.waiting", "deferred"),
        ("message.cancelled", "cancelled"),
    ]
    deferred, waiting = (await _events(database))[1:3]
    assert deferred["payload"]["next_attempt_at"] == later.isoformat()
    assert deferred["payload"]["failure_class"] == "other"
    assert waiting["payload"]["wait_reason"] == "account 'x' is disabled"
    assert waiting["payload"]["next_attempt_at"] == hold.isoformat()


async def test_captured_mail_is_reported_without_its_content(database: Database) -> None:
    store = InboxStore(database)
    record = CapturedRecord(
        id="01900000-0000-7000-8000-000000000001", tenant="dev", source="smtp",
        received_at=NOW, remote_addr="127.0.0.1:1", helo="client", mail_from="a@example.com",
        rcpt_to=["b@example.com"], auth=None, subject="Hello", from_header="a@example.com",
        to_header="b@example.com", headers={}, text="secret body", html=None,
        attachments=[{"filename": "x.pdf", "size": 3}], size=321,
    )  # fmt: skip
    await store.add(record, b"raw")
    [event] = await _events(database)
    assert (event["kind"], event["tenant"], event["inbox_id"], event["message_id"]) == (
        "inbox.received",
        "dev",
        record.id,
        None,
    )
    assert event["source"] == "smtp"
    assert event["payload"] == {
        "mail_from": "a@example.com", "rcpt_to": ["b@example.com"], "subject": "Hello",
        "from": "a@example.com", "to": "b@example.com", "size": 321, "attachments": 1,
    }  # fmt: skip
    assert "secret body" not in str(event)
