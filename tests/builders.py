"""Plain values for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mailgate.ids import new_id
from mailgate.ingest.submission import parse_message_json
from mailgate.model import Message
from mailgate.settings import LimitSettings

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def make_message(**kw: Any) -> Message:
    fields: dict[str, Any] = {
        "id": new_id(),
        "sender": "app@example.com",
        "to": ("a@example.com",),
        "subject": "hello",
        "text": "body",
        "message_id": f"<{new_id()}@example.com>",
        "created_at": NOW,
    }
    fields.update(kw)
    return Message(**fields)


def submitted(**kw: Any) -> dict[str, Any]:
    """A valid message as a client submits it (JSON), with ``kw`` merged in."""
    return {"to": "a@example.com", "subject": "Hi", "text": "body", **kw}


def parse_submitted(item: object, **limits: Any) -> Message:
    """Validate one submitted item as the API does, under ``LimitSettings(**limits)``."""
    return parse_message_json(
        item, tenant="t1", default_from="app@example.com", limits=LimitSettings(**limits), now=NOW
    )
