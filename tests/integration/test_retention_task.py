"""The gateway purges finished mail on its own (``retention.days``, ``retention.interval``)."""

from __future__ import annotations

import asyncio

from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream


async def test_a_sent_message_is_purged_after_the_retention_time(
    start_gateway: GatewayFactory,
) -> None:
    retention = {"days": 1e-6, "interval": 0.05}  # about 90 ms
    async with (
        Upstream() as up,
        start_gateway(relay_url=up.url, retention=retention) as gw,
        api(gw) as client,
    ):
        body = {"to": "a@example.com", "subject": "short-lived", "text": "x"}
        [mid] = (await client.post("/messages", json=body)).json()["ids"]
        await wait_for_state(client, mid, "sent")
        async with asyncio.timeout(10):
            while True:
                if (await client.get(f"/messages/{mid}")).status_code == 404:
                    break
                await asyncio.sleep(0.05)
    assert len(up.received) == 1
