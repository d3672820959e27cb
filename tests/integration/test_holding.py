"""The dispatcher holds no more leased messages for an account than it can send soon:
one sending and one ready per connection of the account's pool."""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailgate.model import State
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream


class SlowUpstream(Upstream):
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(0.2)
        return await super().handle_DATA(server, session, envelope)


async def test_leased_messages_never_exceed_the_accounts_pool(
    start_gateway: GatewayFactory,
) -> None:
    """A relay with 2 connections and a dispatcher with 16 slots: of 12 messages at
    most 4 are leased at once (one sending and one ready per connection); the others
    stay queued, free for another process."""
    up = SlowUpstream()
    settings = {"concurrency": 16, "pool_size": 2}
    async with up, start_gateway(relay_url=up.url, delivery=settings) as gw, api(gw) as client:
        batch = [{"to": "r@example.org", "subject": f"m{i}", "text": "x"} for i in range(12)]
        ids = (await client.post("/messages", json=batch)).json()["ids"]
        most = 0
        while len(up.received) < len(ids):
            counts = await gw.dispatcher.queue.count_by_state("default")
            most = max(most, counts.get(State.SENDING.value, 0))
            await asyncio.sleep(0.02)
        for message_id in ids:
            await wait_for_state(client, message_id, "sent")
    assert 2 <= most <= 4, f"{most} messages were leased at once for a 2-connection relay"
