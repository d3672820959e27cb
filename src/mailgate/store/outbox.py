"""The outbox: every reportable change is an event, written in the same transaction as
the change itself, so a crash can lose neither without the other.

An event names its :class:`EventKind`, the tenant, the queued message (or captured
mail) it is about, that message's source (``rest``, ``smtp``, ``firestore:<document
path>``) and a payload complete enough for a consumer that reads nothing else: the
state, the attempt's number, reply code, enhanced code, failure class and text, the
per-recipient results, and when the next attempt is due.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from mailgate.model import State

__all__ = ["EventKind", "event_row", "kind_of_state"]


class EventKind(StrEnum):
    MESSAGE_QUEUED = "message.queued"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DEFERRED = "message.deferred"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_CANCELLED = "message.cancelled"
    #: held though due, without an attempt spent: its account is disabled or broken, or
    #: over its rate limit (``wait_reason`` says which)
    MESSAGE_WAITING = "message.waiting"
    RECIPIENT_FAILED = "recipient.failed"  #: one recipient refused for good
    INBOX_RECEIVED = "inbox.received"  #: mail captured
    ACCOUNT_FAILING = "account.failing"
    ACCOUNT_RECOVERED = "account.recovered"


_BY_STATE = {
    State.QUEUED: EventKind.MESSAGE_QUEUED,
    State.SENT: EventKind.MESSAGE_SENT,
    State.DEFERRED: EventKind.MESSAGE_DEFERRED,
    State.FAILED: EventKind.MESSAGE_FAILED,
    State.CANCELLED: EventKind.MESSAGE_CANCELLED,
}


def kind_of_state(state: State) -> EventKind:
    """The event of a message reaching ``state`` (``sending`` is not reported)."""
    return _BY_STATE[state]


def event_row(
    kind: EventKind,
    payload: dict[str, Any],
    now: datetime,
    *,
    tenant: str,
    source: str | None,
    message_id: str | None = None,
    inbox_id: str | None = None,
) -> dict[str, Any]:
    """One ``events`` row."""
    return {
        "tenant": tenant,
        "message_id": message_id,
        "inbox_id": inbox_id,
        "source": source,
        "kind": kind.value,
        "payload": payload,
        "created_at": now,
    }
