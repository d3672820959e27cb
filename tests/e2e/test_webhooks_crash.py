"""Webhooks across crashes and processes (issue 7), with real ``mailgate serve``
processes: a kill -9 between a state change and its webhook loses nothing and, once the
receiver acknowledged, nothing is sent twice; two processes on one PostgreSQL share the
delivery without duplicates."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailgate.crypto import generate_key
from tests.e2e.conftest import AsyncMailgate, StartAsync, Workspace
from tests.http_peer import Receiver, Request
from tests.peers import Upstream

pytestmark = pytest.mark.e2e

SECRET = "crash-test-secret-0123456789"


def _env(**extra: str) -> dict[str, str]:
    return {
        "MAILGATE_SECRET_KEY": KEY,
        "MAILGATE_WEBHOOKS__ALLOW_PRIVATE_NETWORKS": "true",
        "MAILGATE_WEBHOOKS__TIMEOUT": "2",  # a claim then lasts 2 × 2 + 5 = 9 s
        "MAILGATE_WEBHOOKS__RETRY_DELAYS": "[0.2]",
        "MAILGATE_WEBHOOKS__POLL_INTERVAL": "0.05",
        "MAILGATE_DELIVERY__POLL_INTERVAL": "0.1",
        **extra,
    }


KEY = generate_key()


def _serve(db: str, upstream: Upstream) -> tuple[str, ...]:
    return ("serve", "--http", "127.0.0.1:0", "--db", db, "--relay", upstream.url)


async def _setup(mg: AsyncMailgate, url: str, count: int, kinds: list[str]) -> list[str]:
    """A webhook for ``kinds``, then ``count`` messages; their ids."""
    await _hook(mg, url, kinds)
    return await _messages(mg, count)


async def _hook(mg: AsyncMailgate, url: str, kinds: list[str]) -> None:
    async with httpx.AsyncClient(base_url=f"{mg.web}/api/v1", timeout=30) as client:
        hook = await client.post("/webhooks", json={"url": url, "secret": SECRET, "kinds": kinds})
        assert hook.status_code == 201, hook.text


async def _messages(mg: AsyncMailgate, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=f"{mg.web}/api/v1", timeout=30) as client:
        ids: list[str] = []
        for start in range(0, count, 100):
            batch = [
                {"to": "r@example.com", "subject": f"m{i}", "text": "x"}
                for i in range(start, min(count, start + 100))
            ]
            sent = await client.post("/messages", json=batch)
            assert sent.status_code == 202, sent.text
            ids += sent.json()["ids"]
        return ids


async def test_kill_9_while_the_webhook_is_in_flight_then_delivered_once_after_restart(
    upstream: Upstream, amailgate: StartAsync, workspace: Workspace
) -> None:
    def answer(n: int, request: Request) -> int | tuple[int, float]:
        return (200, 60.0) if n == 1 else 200  # the first POST hangs: mailgate dies meanwhile

    async with Receiver(answer) as rx:
        first = await amailgate(*_serve(str(workspace.db), upstream), env=_env())
        [message_id] = await _setup(first, rx.url, 1, ["message.sent"])
        [in_flight] = await rx.wait_for(1)
        assert len(upstream.received) == 1  # the state change happened and was committed
        await first.kill()  # SIGKILL to the process group: no shutdown at all

        second = await amailgate(*_serve(str(workspace.db), upstream), env=_env())
        [_, again] = await rx.wait_for(2, limit=30)  # once the dead process's claim ran out
        assert again.body == in_flight.body
        assert again.json()["message_id"] == message_id
        assert again.headers["mailgate-attempt"] == "1"  # a lost claim is not a failure
        await asyncio.sleep(1.0)
        await second.kill()

        third = await amailgate(*_serve(str(workspace.db), upstream), env=_env())
        await asyncio.sleep(2.0)
        assert len(rx.requests) == 2  # acknowledged: never again
        assert len(upstream.received) == 1  # and the mail itself went once
        await third.kill()


async def test_kill_9_before_any_webhook_was_attempted_still_reports_after_restart(
    upstream: Upstream, amailgate: StartAsync, workspace: Workspace
) -> None:
    async with Receiver() as rx:
        # a process that sends mail but does not run the webhook sender: the events wait
        no_sender = _env(MAILGATE_WEBHOOKS__ENABLED="false")
        first = await amailgate(*_serve(str(workspace.db), upstream), env=no_sender)
        ids = await _setup(first, rx.url, 5, ["message.sent"])
        await upstream.wait_for(5)
        await asyncio.sleep(0.3)
        await first.kill()
        assert rx.requests == []

        second = await amailgate(*_serve(str(workspace.db), upstream), env=_env())
        requests = await rx.wait_for(5)
        await asyncio.sleep(0.5)
        await second.kill()
    assert sorted(r.json()["message_id"] for r in requests) == sorted(ids)
    assert len(rx.requests) == 5


async def _delivered(mg: AsyncMailgate) -> float:
    """This process's count of acknowledged webhook POSTs, from its /metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{mg.web}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mailgate_webhook_deliveries_total" and sample.labels == {
                "outcome": "delivered"
            }:
                return sample.value
    raise AssertionError("no webhook delivery counter")


async def test_two_processes_on_one_postgresql_share_webhooks_without_duplicates(
    upstream: Upstream, amailgate: StartAsync, pg_database: str
) -> None:
    slow: Callable[[int, Request], tuple[int, float]] = lambda n, r: (200, 0.01)  # noqa: E731
    async with Receiver(slow) as rx:
        args = ("serve", "--http", "127.0.0.1:0", "--db", pg_database, "--relay", upstream.url)
        a = await amailgate(*args, env=_env())  # one after the other: each its own log
        b = await amailgate(*args, env=_env())
        await _hook(a, rx.url, ["message.queued", "message.sent"])
        await asyncio.sleep(5.5)  # the other process re-reads the endpoints every 5 s
        ids = await _messages(a, 300)
        requests = await rx.wait_for(600, limit=90)
        await asyncio.sleep(1.0)
        shares = [await _delivered(a), await _delivered(b)]
    events = Counter(r.headers["mailgate-event-id"] for r in rx.requests)
    assert len(events) == 600 and max(events.values()) == 1, events.most_common(3)
    kinds: dict[str, list[str]] = {}
    for request in requests:
        body = request.json()
        kinds.setdefault(body["message_id"], []).append(body["kind"])
    assert kinds == {m: ["message.queued", "message.sent"] for m in ids}  # in order, each
    assert sum(shares) == 600 and min(shares) > 0, shares  # both processes took a share
