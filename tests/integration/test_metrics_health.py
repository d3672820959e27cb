"""``/metrics`` and ``/readyz`` (issue 7): figures that match what was done, parsed with
prometheus-client's own parser, and readiness that names the part that is not ready."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from mailgate.app import Gateway, Mode
from mailgate.clock import SystemClock
from mailgate.store import TokenStore
from mailgate.store.outbox import OutboxStore
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(gw: Gateway, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=gw.http_url, headers=headers, timeout=30) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_what_delivery_did(start_gateway: GatewayFactory) -> None:
    async with Upstream() as up, start_gateway(relay_url=up.url) as gw, api(gw) as client:
        up.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user"
        batch = [
            {"to": "a@example.com", "subject": "1", "text": "x"},
            {"to": "b@example.com", "subject": "2", "text": "x"},
            {"to": "nobody@example.com", "subject": "3", "text": "x"},
        ]
        ids = (await client.post("/messages", json=batch)).json()["ids"]
        for mid in ids:
            await wait_for_state(client, mid, "sent", "failed")
        samples = await scrape(gw)

    sent = value(samples, "mailgate_messages_total", account="default", outcome="sent")
    failed = value(samples, "mailgate_messages_total", account="default", outcome="failed")
    assert (sent, failed) == (2, 1)
    assert value(samples, "mailgate_queue_depth", state="sent") == 2
    assert value(samples, "mailgate_queue_depth", state="failed") == 1
    assert value(samples, "mailgate_queue_depth", state="queued") == 0
    ok = value(
        samples, "mailgate_attempt_duration_seconds_count", account="default", **{"class": "none"}
    )
    refused = value(
        samples, "mailgate_attempt_duration_seconds_count",
        account="default", **{"class": "invalid_recipient"},
    )  # fmt: skip
    assert (ok, refused) == (2, 1)
    assert value(samples, "mailgate_queue_latency_seconds_count") == 3
    pool = "default/default"
    assert value(samples, "mailgate_pool_connections_created_total", pool=pool) == up.connections
    assert value(samples, "mailgate_pool_connections_reused_total", pool=pool) == 3 - up.connections


async def test_metrics_show_each_outbox_consumers_backlog(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, api(gw) as client:
        outbox = OutboxStore(gw.accounts.db)
        await outbox.register("hooks", SystemClock().now())
        await outbox.register("sync", SystemClock().now())
        body = [{"to": "a@example.com", "subject": f"{i}", "text": "x"} for i in range(3)]
        assert (await client.post("/messages", json=body)).status_code == 202
        [first, *_] = await outbox.claim("sync", SystemClock().now(), 10, 60)
        await outbox.ack("sync", [first.id], SystemClock().now())
        samples = await scrape(gw)
    hooks = value(samples, "mailgate_outbox_backlog", consumer="hooks")
    sync = value(samples, "mailgate_outbox_backlog", consumer="sync")
    assert hooks >= 3 and sync == hooks - 1  # queued events (and any sent ones since)


async def test_metrics_are_the_operators(start_gateway: GatewayFactory) -> None:
    """Behind the admin token when one is set; a tenant's token sees only its own
    messages elsewhere, so it gets no figures that cover every tenant."""
    async with start_gateway(api_token="admin-token-9") as gw:
        _, tenant_token = await TokenStore(gw.accounts.db, SystemClock()).create("acme", "t")
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
            assert (await client.get("/metrics")).status_code == 401
            bearer = {"Authorization": f"Bearer {tenant_token}"}
            assert (await client.get("/metrics", headers=bearer)).status_code == 403
        samples = await scrape(gw, token="admin-token-9")
    assert ("mailgate_queue_depth", (("state", "queued"),)) in samples


async def test_readyz_names_the_part_that_is_not_ready(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"store": "ok", "dispatcher": "ok", "webhooks": "ok"},
        }

        async with gw.accounts.db.write() as conn:  # as if an older mailgate had migrated it
            head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            await conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
        stale = await client.get("/readyz")
        assert stale.status_code == 503
        assert stale.json()["checks"]["store"].startswith("schema at revision 0002")
        async with gw.accounts.db.write() as conn:
            await conn.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )

        await gw.dispatcher.stop()
        await gw.webhooks.stop()
        stopped = await client.get("/readyz")
        assert stopped.status_code == 503
        assert stopped.json() == {
            "status": "not ready",
            "checks": {"store": "ok", "dispatcher": "not running", "webhooks": "not running"},
        }
        assert (await client.get("/healthz")).status_code == 200  # alive all the same


async def test_readyz_in_dev_checks_the_smtp_server(start_gateway: GatewayFactory) -> None:
    async with (
        start_gateway(Mode.DEV) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client,
    ):
        checks = (await client.get("/readyz")).json()["checks"]
        assert gw._smtp_server is not None and gw.smtp_address is not None
        await gw._smtp_server.stop(0)  # no longer listening; the rest still runs
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*gw.smtp_address)
        stopped = await client.get("/readyz")
    assert checks == {"store": "ok", "dispatcher": "ok", "webhooks": "ok", "smtp": "ok"}
    assert stopped.status_code == 503
    assert stopped.json() == {
        "status": "not ready",
        "checks": {"store": "ok", "dispatcher": "ok", "webhooks": "ok", "smtp": "not listening"},
    }


async def test_a_separate_metrics_listener_needs_no_token_and_serves_nothing_else(
    start_gateway: GatewayFactory,
) -> None:
    settings = {"api_token": "admin-token-1", "http": {"metrics_port": 0}}
    async with start_gateway(**settings) as gw:
        assert gw.metrics_address is not None
        host, port = gw.metrics_address
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as client:
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "mailgate_queue_depth" in metrics.text
            assert (await client.get("/readyz")).json()["status"] == "ready"
            assert (await client.get("/healthz")).status_code == 200
            for path in ("/api/v1/messages", "/openapi.json", "/docs"):
                assert (await client.get(path)).status_code == 404, path
            refused = await client.post("/metrics")
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET")
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
            assert (await client.get("/metrics")).status_code == 401  # the API still guards


async def test_after_a_restart_the_queue_depth_is_the_stores_and_counters_start_at_zero(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """Gauges are read from the store, so a new process on the same database shows the
    queue as it is; counters are the process's own and start again at zero (Prometheus's
    ``rate()`` takes the reset in its stride)."""
    upstream.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user"
    later = {"subject": "later", "text": "x", "send_at": "2099-01-01T00:00:00Z"}
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        batch = [
            {"to": "a@example.com", "subject": "1", "text": "x"},
            {"to": "b@example.com", "subject": "2", "text": "x"},
            {"to": "nobody@example.com", "subject": "3", "text": "x"},
            {"to": "c@example.com", **later},
            {"to": "d@example.com", **later},
        ]
        *ids, _, withdrawn = (await client.post("/messages", json=batch)).json()["ids"]
        for mid in ids:
            await wait_for_state(client, mid, "sent", "failed")
        assert (await client.delete(f"/messages/{withdrawn}")).status_code == 200
        before = await scrape(gw)
    async with start_gateway(relay_url=upstream.url) as gw:
        after = await scrape(gw)

    depth = {"sent": 2, "failed": 1, "queued": 1, "cancelled": 1, "deferred": 0, "sending": 0}
    for samples in (before, after):
        for state, n in depth.items():
            assert value(samples, "mailgate_queue_depth", state=state) == n, state
    assert value(before, "mailgate_messages_total", account="default", outcome="sent") == 2
    assert value(before, "mailgate_messages_total", account="default", outcome="failed") == 1
    assert value(before, "mailgate_queue_latency_seconds_count") == 3
    counted = {name for name, _ in after} & {
        "mailgate_messages_total", "mailgate_attempt_duration_seconds_count",
    }  # fmt: skip
    assert counted == set()  # no account has an attempt in this process yet
    assert value(after, "mailgate_queue_latency_seconds_count") == 0
    assert ("mailgate_queue_latency_seconds_count", ()) in after  # shown, at zero
