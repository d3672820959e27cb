"""Plain values for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mailgate.ids import new_id
from mailgate.model import Message

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
