"""Order through a real gateway: ``send_at`` holds a message, ``immediate`` jumps the line."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream


class SlowUpstream(Upstream):
    """Takes ``delay`` seconds per DATA and notes when each subject arrived."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.arrivals: list[tuple[float, str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        reply = await super().handle_DATA(server, session, envelope)
        subject = self.received[-1].message["Subject"] if self.received else ""
        self.arrivals.append((time.time(), str(subject)))
        return reply


def _mail(subject: str, **fields: object) -> dict[str, object]:
    return {"to": "rcpt@example.org", "subject": subject, "text": "x", **fields}


async def test_send_at_holds_a_message_until_its_time(start_gateway: GatewayFactory) -> None:
    up = SlowUpstream(0)
    async with up, start_gateway(relay_url=up.url) as gw, api(gw) as client:
        send_at = datetime.now(UTC) + timedelta(seconds=1.5)
        body = _mail("later", send_at=send_at.isoformat())
        [message_id] = (await client.post("/messages", json=body)).json()["ids"]
        [now_id] = (await client.post("/messages", json=_mail("now"))).json()["ids"]
        await wait_for_state(client, now_id, "sent")
        assert (await client.get(f"/messages/{message_id}")).json()["state"] == "queued"
        await wait_for_state(client, message_id, "sent")
        arrived = dict((subject, at) for at, subject in up.arrivals)
        assert arrived["later"] >= send_at.timestamp()
        assert arrived["now"] < send_at.timestamp()


async def test_immediate_mail_overtakes_a_busy_queue(start_gateway: GatewayFactory) -> None:
    """One send at a time, each taking 0.3 s: an immediate message posted behind six
    normal ones arrives before most of them, not last."""
    up = SlowUpstream(0.3)
    async with (
        up,
        start_gateway(relay_url=up.url, delivery={"concurrency": 1, "pool_size": 1}) as gw,
        api(gw) as client,
    ):
        batch = [_mail(f"normal-{i}") for i in range(6)]
        assert (await client.post("/messages", json=batch)).status_code == 202
        await asyncio.sleep(0.1)  # the first normal one is being sent
        urgent = await client.post("/messages", json=_mail("urgent", priority="immediate"))
        [urgent_id] = urgent.json()["ids"]
        await wait_for_state(client, urgent_id, "sent")
        await up.wait_for(7)
        order = [subject for _, subject in up.arrivals]
        assert order.index("urgent") <= 2, order
