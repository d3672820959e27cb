"""Queued mail as one resource: submit, list, read, retry, cancel — and its one view.

The web API, the CLI (``mailgate queue``) and the admin UI all call this service; none
of them reaches into the queue store, and a message is shown in exactly one shape
(:func:`message_view`), so what the API returns and what the CLI prints agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mailgate.clock import Clock
from mailgate.ingest.submission import SubmissionReport, Submissions
from mailgate.model import Attempt, State
from mailgate.store import Activity, MessageRecord, QueueStore

__all__ = ["MessagesService", "message_view"]


class MessagesService:
    def __init__(self, queue: QueueStore, clock: Clock, submissions: Submissions | None) -> None:
        self.queue = queue
        self.clock = clock
        self.submissions = submissions  #: None where nothing may be submitted (the CLI)

    async def submit(self, items: Sequence[object], tenant: str) -> SubmissionReport:
        """Validate and queue a batch; good items are committed before this returns."""
        assert self.submissions is not None, "this service takes no submissions"
        return await self.submissions.submit(items, tenant)

    async def list(
        self,
        tenant: str | None,
        *,
        state: State | None = None,
        account: str | None = None,
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[MessageRecord], str | None]:
        """Newest first; the cursor of the next page, or None on the last one. ``tenant``
        None: every tenant's (the admin UI); ``text``: see :meth:`QueueStore.list`."""
        return await self.queue.list(
            tenant, state=state, account=account, text=text, limit=limit, cursor=cursor
        )

    async def get(self, message_id: str, tenant: str | None) -> MessageRecord:
        """``tenant`` None: whichever tenant's (the admin UI)."""
        return await self.queue.get(message_id, tenant)

    async def content(self, message_id: str) -> tuple[str | None, str | None, bytes | None]:
        """Text body, HTML body, and the source as an SMTP client sent it (if it did)."""
        return await self.queue.content(message_id)

    async def retry(self, message_id: str, tenant: str) -> MessageRecord:
        """Deferred or failed → queued, due now, to the recipients still pending."""
        await self.queue.retry(message_id, tenant, self.clock.now())
        if self.submissions is not None:
            self.submissions.on_queued()  # a running dispatcher picks it up at once
        return await self.queue.get(message_id, tenant)

    async def cancel(self, message_id: str, tenant: str) -> MessageRecord:
        """Withdraw a message not yet sent (``Conflict`` if it was, or is being sent)."""
        await self.queue.cancel(message_id, tenant, self.clock.now())
        return await self.queue.get(message_id, tenant)

    async def counts(self, tenant: str | None) -> dict[str, int]:
        """Messages per state (every tenant's with ``None``)."""
        return await self.queue.count_by_state(tenant)

    async def activity(self, tenant: str) -> Activity:
        """What finished in the last hour and day, for the tenant's dashboard."""
        return await self.queue.activity(tenant, self.clock.now())


def message_view(r: MessageRecord) -> dict[str, Any]:
    """The one JSON shape of a queued message, its attempts included."""
    return {
        "id": r.id,
        "key": r.key,
        "account": r.account,
        "state": r.state.value,
        "from": r.sender,
        "to": list(r.to),
        "cc": list(r.cc),
        "bcc": list(r.bcc),
        "subject": r.subject,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "next_attempt_at": iso(r.next_attempt_at),
        "last_error": r.last_error,
        "wait_reason": r.wait_reason,
        "metadata": r.metadata,
        "attempts": [_attempt_view(a) for a in r.attempts],
    }


def _attempt_view(a: Attempt) -> dict[str, Any]:
    return {
        "at": iso(a.at),
        "transport": a.transport,
        "code": a.code,
        "enhanced_code": a.enhanced_code,
        "text": a.text,
        "duration_ms": a.duration_ms,
        "recipients": {
            k: {"status": v.status.value, "code": v.code, "text": v.text}
            for k, v in a.recipients.items()
        },
        "failure_class": a.failure_class.value if a.failure_class else None,
        "counted": a.counted,
        "account": a.account,
        "remote_id": a.remote_id,
    }


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z``, as every view shows times."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")
