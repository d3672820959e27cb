"""Delivery-report sync (issue 7) against a real local HTTP endpoint and a real SMTP
upstream: finished messages arrive in batches with their outcome, a failing endpoint gets
the same reports until it answers 2xx and then never again, basic and bearer credentials
are sent (and never logged), ``next_sync_after`` is obeyed, and nothing is POSTed while
``reports.sync_url`` is unset; two gateways on one PostgreSQL share the work."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.store import Database
from mailgate.store.outbox import OutboxStore
from tests.http_peer import Receiver, Request, always, fail_first
from tests.integration.conftest import (
    GatewayFactory,
    api,
    fast_settings,
    fresh_postgres_database,
    wait_for_state,
)
from tests.integration.test_metrics_health import scrape, value
from tests.peers import Upstream

PASSWORD = "Sync-Basic-Pw-4rT7"
TOKEN = "Sync-Bearer-Tk-8pL2"
QUERY = "Sync-Query-Key-2hN6"  #: a secret some endpoints take in the query


def _reports(url: str, **fields: Any) -> dict[str, Any]:
    return {"reports": {"sync_url": url, "interval": 0.1, "retry_max_delay": 2.0, **fields}}


async def _send(client: httpx.AsyncClient, to: str = "r@example.com", **fields: Any) -> str:
    message = {"to": to, "subject": "hi", "text": "x", **fields}
    response = await client.post("/messages", json=message)
    assert response.status_code == 202, response.text
    message_id: str = response.json()["ids"][0]
    return message_id


def _items(requests: list[Request]) -> list[dict[str, Any]]:
    return [item for r in requests for item in r.json()["delivery_report"]]


def _when(stamp: str) -> datetime:
    assert stamp.endswith("Z")
    return datetime.fromisoformat(stamp)


async def test_sent_and_failed_messages_arrive_in_batches_with_their_outcome(
    start_gateway: GatewayFactory, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user"
    settings = _reports("", interval=2.0, batch=2, username="app", password=PASSWORD)
    async with Receiver() as rx:
        settings["reports"]["sync_url"] = rx.url
        async with start_gateway(relay_url=upstream.url, **settings) as gw, api(gw) as client:
            first = await _send(client, id="order-1", metadata={"order": 1})
            second = await _send(client, id="order-2")
            bad = await _send(client, to="nobody@example.com")
            ids = (first, second, bad)
            shown = {m: await wait_for_state(client, m, "sent", "failed") for m in ids}
            assert rx.requests == []  # all three finished before the first sync round
            requests = await rx.wait_for(2, limit=10)
            await asyncio.sleep(0.3)
            assert len(rx.requests) == 2  # acknowledged: never again
            samples = await scrape(gw)

    assert [len(r.json()["delivery_report"]) for r in requests] == [2, 1]  # batch = 2
    assert requests[1].at - requests[0].at < 1.0  # a full batch: the next one at once
    for request in requests:
        assert request.headers["content-type"] == "application/json"
        expected = base64.b64encode(f"app:{PASSWORD}".encode()).decode()
        assert request.headers["authorization"] == f"Basic {expected}"
    items = {item["id"]: item for item in _items(requests)}
    assert set(items) == {first, second, bad}
    assert len({item["event_id"] for item in items.values()}) == 3

    sent = items[first]
    assert (sent["state"], sent["key"], sent["metadata"]) == ("sent", "order-1", {"order": 1})
    assert (sent["tenant"], sent["source"], sent["attempt"]) == ("default", "rest", 1)
    assert (sent["code"], sent["error"], sent["error_ts"]) == (250, None, None)
    assert sent["recipients"]["r@example.com"]["code"] == 250
    assert _when(sent["sent_ts"]) == datetime.fromisoformat(shown[first]["attempts"][0]["at"])
    assert (items[second]["key"], items[second]["metadata"]) == ("order-2", {})

    failed = items[bad]
    assert (failed["state"], failed["key"], failed["sent_ts"]) == ("failed", None, None)
    assert (failed["code"], failed["enhanced_code"]) == (550, "5.1.1")
    assert failed["error"] == "5.1.1 no such user"
    assert _when(failed["error_ts"]) == datetime.fromisoformat(shown[bad]["attempts"][0]["at"])
    assert failed["recipients"]["nobody@example.com"]["status"] == "failed"

    assert value(samples, "mailgate_report_sync_total", outcome="delivered") == 2
    assert value(samples, "mailgate_report_sync_reports_total") == 3
    assert PASSWORD not in caplog.text


async def test_a_failing_endpoint_gets_the_same_reports_until_it_answers_2xx(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Receiver(fail_first(2, 503)) as rx:
        settings = _reports(f"{rx.url}?key={QUERY}", token=TOKEN)
        async with start_gateway(**settings) as gw, api(gw) as client:  # capture: all sent
            message_id = await _send(client)
            requests = await rx.wait_for(3)
            await asyncio.sleep(0.6)  # six idle rounds
            assert len(rx.requests) == 3  # acknowledged: never again
            later = await _send(client)
            [*_, fourth] = await rx.wait_for(4)
            await asyncio.sleep(0.4)
            samples = await scrape(gw)

    assert len(rx.requests) == 4
    assert {r.body for r in requests} == {requests[0].body}  # the same reports each time
    assert [i["id"] for i in requests[0].json()["delivery_report"]] == [message_id]
    assert [i["id"] for i in fourth.json()["delivery_report"]] == [later]
    assert {r.headers["authorization"] for r in rx.requests} == {f"Bearer {TOKEN}"}
    # the retry delay doubles: 0.1 s after the first failure, 0.2 s after the second
    assert requests[2].at - requests[1].at >= 0.18
    assert value(samples, "mailgate_report_sync_total", outcome="failed") == 2
    assert value(samples, "mailgate_report_sync_total", outcome="delivered") == 2
    assert value(samples, "mailgate_outbox_backlog", consumer="report-sync") == 0
    assert "HTTP 503 Service Unavailable: answer 503" in caplog.text  # the error, logged
    assert TOKEN not in caplog.text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("mailgate")]
    assert any(f"{rx.url} (HTTP 503" in line for line in ours)  # named, without its query
    assert not any(QUERY in line for line in ours)


async def test_next_sync_after_delays_the_next_post(start_gateway: GatewayFactory) -> None:
    def body(n: int, request: Request) -> dict[str, Any]:
        if n == 1:
            return {"ok": True, "next_sync_after": 1.5}  # seconds
        soon = datetime.now(UTC) + timedelta(seconds=1.2)
        return {"next_sync_after": soon.isoformat().replace("+00:00", "Z")}  # a time

    async with (
        Receiver(body=body) as rx,
        start_gateway(**_reports(rx.url)) as gw,
        api(gw) as client,
    ):
        await _send(client)
        await rx.wait_for(1)
        second = await _send(client)
        await wait_for_state(client, second, "sent")
        await rx.wait_for(2)
        third = await _send(client)
        await wait_for_state(client, third, "sent")
        requests = await rx.wait_for(3)

    assert requests[1].at - requests[0].at >= 1.4  # not the 0.1 s interval
    assert requests[2].at - requests[1].at >= 1.1
    assert [i["id"] for i in requests[2].json()["delivery_report"]] == [third]


async def test_a_next_sync_after_past_any_float_does_not_stop_the_sync(
    start_gateway: GatewayFactory,
) -> None:
    """``next_sync_after`` as a 400-digit number: ``float()`` raised OverflowError out of
    the round, which ended the sync task for good; no report was sent again until a
    restart. A number no float holds cannot be read: the next round comes as usual."""

    def body(n: int, request: Request) -> dict[str, Any]:
        return {"next_sync_after": 10**400} if n == 1 else {"ok": True}

    async with (
        Receiver(body=body) as rx,
        start_gateway(**_reports(rx.url)) as gw,
        api(gw) as client,
    ):
        await _send(client)
        await rx.wait_for(1)
        second = await _send(client)
        await wait_for_state(client, second, "sent")
        requests = await rx.wait_for(2)
    assert [i["id"] for i in requests[1].json()["delivery_report"]] == [second]


async def test_a_huge_answer_is_not_held_in_memory(start_gateway: GatewayFactory) -> None:
    """A 2xx answer of 128 MiB (an endpoint echoing a log, say) was read whole into
    memory; only its first 64 KiB is read now, and the sync goes on."""
    bodies: list[bytes] = []
    first_arrived, second_arrived = asyncio.Event(), asyncio.Event()
    chunk = b" " * 65536

    async def endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while head := await reader.readuntil(b"\r\n\r\n"):
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    assert length is not None
                    bodies.append(await reader.readexactly(int(length[1])))
                    (first_arrived if len(bodies) == 1 else second_arrived).set()
                    size = 2048 * len(chunk) if len(bodies) == 1 else 2
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    for _ in range(size // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()
                    writer.write(b"{}" if size == 2 else b"")
                    await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(endpoint, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/reports"
    try:
        async with start_gateway(**_reports(url)) as gw, api(gw) as client:
            tracemalloc.start()
            try:
                first = await _send(client)
                await wait_for_state(client, first, "sent")
                async with asyncio.timeout(10):  # its own report, not one with the second's
                    await first_arrived.wait()
                second = await _send(client)
                await wait_for_state(client, second, "sent")
                async with asyncio.timeout(10):
                    await second_arrived.wait()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        server.close()
        await server.wait_closed()
    reported = [[i["id"] for i in json.loads(b)["delivery_report"]] for b in bodies]
    assert reported[:2] == [[first], [second]]
    assert peak < 32 * 1024 * 1024


async def test_nothing_is_posted_while_sync_url_is_unset(
    start_gateway: GatewayFactory,
) -> None:
    """Unset after being set, the consumer is paused: what it had pending is kept and
    sent once the URL is back; what finished meanwhile is not reported."""
    refusing = True
    async with Receiver(lambda n, r: 503 if refusing else 200) as rx:
        async with start_gateway() as gw, api(gw) as client:  # never configured
            await wait_for_state(client, await _send(client), "sent")
            await asyncio.sleep(0.3)
            assert "report-sync" not in str(await scrape(gw))

        async with start_gateway(**_reports(rx.url)) as gw, api(gw) as client:
            kept = await _send(client)
            await rx.wait_for(1)  # refused: still pending
        refused = len(rx.requests)

        async with start_gateway() as gw, api(gw) as client:
            unreported = await _send(client)
            await wait_for_state(client, unreported, "sent")
            await asyncio.sleep(0.5)
            assert len(rx.requests) == refused
            samples = await scrape(gw)
            assert value(samples, "mailgate_outbox_backlog", consumer="report-sync") == 1

        refusing = False
        async with start_gateway(**_reports(rx.url)) as gw, api(gw) as client:
            [*_, resumed] = await rx.wait_for(refused + 1)
            new = await _send(client)  # reported again from now on
            [*_, last] = await rx.wait_for(refused + 2)
            await asyncio.sleep(0.4)
            assert await _ready(gw) == "ok"

    assert len(rx.requests) == refused + 2
    assert [i["id"] for i in resumed.json()["delivery_report"]] == [kept]
    assert [i["id"] for i in last.json()["delivery_report"]] == [new]


async def test_a_report_refused_past_dead_after_is_dead_lettered_with_its_error(
    start_gateway: GatewayFactory, db_url: str
) -> None:
    async with Receiver(always(500)) as rx:
        settings = _reports(rx.url, dead_after=0.5, retry_max_delay=0.2)
        async with start_gateway(**settings) as gw, api(gw) as client:
            message_id = await _send(client)
            await rx.wait_for(3)
            await asyncio.sleep(0.6)  # past dead_after: the next failure is the last
            posts = len(rx.requests)
            await asyncio.sleep(0.6)
            assert len(rx.requests) == posts  # no more retries

    db = Database(db_url)
    try:
        [dead] = await OutboxStore(db).dead("report-sync")
        assert await OutboxStore(db).backlog("report-sync") == 0
    finally:
        await db.aclose()
    assert dead.message_id == message_id and dead.kind == "message.sent"
    assert dead.last_error == "HTTP 500 Internal Server Error: answer 500"
    assert dead.attempts == posts


async def test_an_unreachable_endpoint_is_retried_without_stopping_the_gateway(
    start_gateway: GatewayFactory,
) -> None:
    async with Receiver(always(200)) as rx:
        url = rx.url
    settings = _reports(url, timeout=0.5)  # nothing listens there any more
    async with start_gateway(**settings) as gw, api(gw) as client:
        await wait_for_state(client, await _send(client), "sent")
        await asyncio.sleep(0.5)
        samples = await scrape(gw)
        assert value(samples, "mailgate_report_sync_total", outcome="failed") >= 1
        assert await _ready(gw) == "ok"


async def _ready(gw: Gateway) -> str:
    return (await gw.readiness())["report_sync"]


async def test_two_gateways_on_postgresql_share_the_reports_without_duplicates(
    postgres_url: str,
) -> None:
    database = await fresh_postgres_database(postgres_url, "mailgate_report_sync")
    async with Receiver(lambda n, r: (200, 0.3)) as rx:  # slow: the other one claims meanwhile
        settings = fast_settings(database, **_reports(rx.url, batch=3, interval=0.05))
        async with (
            Gateway(settings, mode=Mode.SERVE) as one,
            Gateway(settings, mode=Mode.SERVE) as two,
            api(one) as client,
        ):
            batch = [{"to": f"r{i}@example.com", "subject": "hi", "text": "x"} for i in range(20)]
            ids = (await client.post("/messages", json=batch)).json()["ids"]
            posts = 1
            while len(_items(await rx.wait_for(posts, limit=20))) < 20:
                posts += 1
            await asyncio.sleep(0.5)
            shares = [
                value(await scrape(gw), "mailgate_report_sync_reports_total") for gw in (one, two)
            ]

    reported = [item["id"] for item in _items(rx.requests)]
    assert sorted(reported) == sorted(ids)  # each once
    assert all(len(r.json()["delivery_report"]) <= 3 for r in rx.requests)
    assert sum(shares) == 20 and min(shares) > 0  # both did some
