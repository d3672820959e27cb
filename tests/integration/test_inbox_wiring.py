"""The inbox test API's wiring in the gateway: the ``inbox.code_pattern`` setting, and
waits and event streams ended first when the gateway stops."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from pydantic import ValidationError

from mailgate.app import Mode
from mailgate.settings import Settings
from tests.integration.conftest import GatewayFactory, api
from tests.integration.test_inbox_test_api import _mail, _only_id, _send, _until


async def test_code_pattern_setting_and_the_query_instead(start_gateway: GatewayFactory) -> None:
    text = "Your Example verification code is X7K9QP. Support id: 19f3c2\n"
    async with (
        start_gateway(Mode.DEV, inbox={"code_pattern": "[A-Z0-9]{6}"}) as gw,
        api(gw) as client,
    ):
        await asyncio.to_thread(_send, gw, _mail("cy@example.net", "Code", text=text))
        capture_id = await _only_id(client)
        url = f"/inbox/{capture_id}/codes"
        [code] = (await client.get(url)).json()["codes"]
        assert code["code"] == "X7K9QP"
        # ?pattern= instead of the setting: a group names the code
        [code] = (await client.get(url, params={"pattern": r"(?i)([a-f0-9]{6})"})).json()["codes"]
        assert code["code"] == "19f3c2"


def test_the_code_pattern_setting_is_checked_at_start() -> None:
    assert Settings(inbox={"code_pattern": "[A-Z0-9]{6}"}).inbox.code_pattern == "[A-Z0-9]{6}"
    with pytest.raises(ValidationError, match="repeats a group holding a repetition"):
        Settings(inbox={"code_pattern": "(a+)+"})


async def test_stopping_the_gateway_ends_event_streams_and_waits_at_once(
    start_gateway: GatewayFactory,
) -> None:
    """Not after the web server's 5 s grace for open connections: they end first."""
    async with httpx.AsyncClient(timeout=10) as client, contextlib.AsyncExitStack() as stack:
        gw = await stack.enter_async_context(start_gateway(Mode.DEV))
        base = f"{gw.http_url}/api/v1"
        stream = await client.send(client.build_request("GET", f"{base}/inbox/events"), stream=True)
        waiting = asyncio.create_task(
            client.get(f"{base}/inbox/wait", params={"to": "nobody@example.net", "timeout": 60})
        )
        await _until(lambda: gw.inbox.events.count() == 2)
        stopping = time.monotonic()
        await stack.aclose()
        assert time.monotonic() - stopping < 3
        assert (await waiting).status_code == 408
        assert [line async for line in stream.aiter_lines()] == ["retry: 2000", ""]
        await stream.aclose()
