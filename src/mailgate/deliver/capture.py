"""The capture transport: "deliver" into the inbox, so nothing leaves the machine."""

from __future__ import annotations

from mailgate.deliver.transport import Outgoing
from mailgate.inbox import CaptureMeta, Inbox
from mailgate.model import Outcome, RecipientResult, SendResult

__all__ = ["CaptureTransport"]


class CaptureTransport:
    name = "capture"

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def send(self, outgoing: Outgoing) -> SendResult:
        envelope, content = outgoing.envelope, await outgoing.mime()
        meta = CaptureMeta(
            mail_from=envelope.sender,
            rcpt_to=envelope.recipients,
            source="api",
            tenant=envelope.tenant,
        )
        record = await self.inbox.capture(content, meta)
        text = f"captured as {record.id}"
        accepted = RecipientResult(Outcome.SENT, 250, text)
        return SendResult(
            Outcome.SENT, 250, "2.0.0", text, {r: accepted for r in envelope.recipients}
        )

    async def aclose(self) -> None:
        return None
