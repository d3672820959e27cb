"""REST → dispatcher → a real upstream MTA (aiosmtpd in this process)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailgate.app import Mode
from tests.integration.conftest import GatewayFactory, api, fresh_postgres_database, wait_for_state
from tests.peers import Upstream
from tests.tls import server_context

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8


def message(**kw: Any) -> dict[str, Any]:
    return {
        "from": "Shop <shop@example.com>",
        "to": "a@example.com",
        "subject": "Hi",
        "text": "t",
        **kw,
    }


async def submit(client: httpx.AsyncClient, *items: dict[str, Any]) -> list[str]:
    response = await client.post("/messages", json=list(items) if len(items) > 1 else items[0])
    assert response.status_code == 202, response.text
    ids: list[str] = response.json()["ids"]
    return ids


async def test_rest_to_upstream_with_exact_headers_and_parts(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [mid] = await submit(
            client,
            message(
                to=["Ann <a@example.com>", "b@example.com"],
                cc=["c@example.com"],
                bcc=["secret@example.com"],
                reply_to="help@example.com",
                subject="Your receipt – Grüße",
                text="Thanks!",
                html="<p>Thanks!</p>",
                headers={"X-Order": "42"},
                attachments=[
                    {
                        "filename": "r.pdf",
                        "content_type": "application/pdf",
                        "content": base64.b64encode(PDF).decode(),
                    }
                ],
            ),
        )
        [got] = await upstream.wait_for(1)
        body = await wait_for_state(client, mid, "sent")

    assert got.mail_from == "shop@example.com"
    assert got.rcpt_tos == ["a@example.com", "b@example.com", "c@example.com", "secret@example.com"]
    msg = got.message
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["To"] == "Ann <a@example.com>, b@example.com"
    assert msg["Cc"] == "c@example.com"
    assert msg["Reply-To"] == "help@example.com"
    assert msg["Subject"] == "Your receipt – Grüße"
    assert msg["X-Order"] == "42"
    assert msg["X-Mailgate-ID"] == mid
    assert msg["Message-ID"].endswith("@example.com>")
    assert "Bcc" not in msg and b"secret@example.com" not in got.raw
    assert msg.get_content_type() == "multipart/mixed"
    alternative, attachment = list(msg.iter_parts())
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert attachment.get_filename() == "r.pdf"
    assert attachment.get_payload(decode=True) == PDF

    [attempt] = body["attempts"]
    assert attempt["code"] == 250 and attempt["enhanced_code"] == "2.0.0"
    assert attempt["transport"] == f"smtp://127.0.0.1:{upstream.port}"
    assert set(attempt["recipients"]) == set(got.rcpt_tos)
    assert all(r["status"] == "sent" for r in attempt["recipients"].values())


async def test_451_then_retry_is_sent_with_two_attempts(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.data_replies.append("451 4.3.0 Try again later")
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [mid] = await submit(client, message())
        body = await wait_for_state(client, mid, "sent")
    first, second = body["attempts"]
    assert (first["code"], first["enhanced_code"]) == (451, "4.3.0")
    assert first["recipients"]["a@example.com"]["status"] == "deferred"
    assert second["code"] == 250
    assert len(upstream.received) == 1 and upstream.transactions == 2


async def test_550_is_failed_with_code_and_enhanced_code(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.data_replies.append("550 5.1.1 <a@example.com>: Recipient address rejected")
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [mid] = await submit(client, message())
        body = await wait_for_state(client, mid, "failed")
        [attempt] = body["attempts"]
        assert (attempt["code"], attempt["enhanced_code"]) == (550, "5.1.1")
        assert "Recipient address rejected" in attempt["text"]
        assert body["last_error"] == attempt["text"] and body["next_attempt_at"] is None
        # retry: failed → queued → sent once the upstream accepts
        response = await client.post(f"/messages/{mid}/retry")
        assert response.status_code == 200 and response.json()["state"] in {
            "queued",
            "sending",
            "sent",
        }
        body = await wait_for_state(client, mid, "sent")
    assert len(body["attempts"]) == 2 and len(upstream.received) == 1


async def test_partial_rcpt_rejection(start_gateway: GatewayFactory, upstream: Upstream) -> None:
    upstream.rcpt_replies["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: no such user"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [mid] = await submit(
            client, message(to=["a@example.com", "nobody@example.com"], cc=["c@example.com"])
        )
        body = await wait_for_state(client, mid, "sent", "failed")
    assert body["state"] == "sent"
    [got] = upstream.received
    assert got.rcpt_tos == ["a@example.com", "c@example.com"]  # never sent to the refused one
    recipients = body["attempts"][0]["recipients"]
    assert recipients["nobody@example.com"] == {
        "status": "failed",
        "code": 550,
        "text": "5.1.1 <nobody@example.com>: no such user",
    }
    assert recipients["a@example.com"]["status"] == "sent"


async def test_transient_rcpt_refusal_retries_only_that_recipient(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.rcpt_replies["busy@example.com"] = "451 4.2.1 Mailbox busy"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [mid] = await submit(client, message(to=["a@example.com", "busy@example.com"]))
        body = await wait_for_state(client, mid, "deferred")
        assert body["attempts"][0]["recipients"]["busy@example.com"]["status"] == "deferred"
        del upstream.rcpt_replies["busy@example.com"]
        body = await wait_for_state(client, mid, "sent")
    assert [r.rcpt_tos for r in upstream.received] == [["a@example.com"], ["busy@example.com"]]
    assert list(body["attempts"][1]["recipients"]) == ["busy@example.com"]


async def test_421_at_rcpt_keeps_the_replies_and_defers_the_rest_as_throttled(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """RFC 5321 §3.8: a 421 to RCPT closes the channel (aiosmtplib closes its end). The
    next RCPT then raised "Server not connected", and the attempt was recorded with that
    instead of the server's reply: the 550 already given for one recipient was lost (it
    was tried again) and the 421, a request to slow down, was classed ``network``."""
    upstream.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user"
    upstream.rcpt_replies["b@example.com"] = "421 4.7.0 too many connections, slow down"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        to = ["nobody@example.com", "b@example.com", "c@example.com"]
        [mid] = await submit(client, message(to=to))
        body = await wait_for_state(client, mid, "deferred")
    [attempt] = body["attempts"]
    assert (attempt["code"], attempt["failure_class"]) == (421, "throttled"), attempt
    assert {r: (v["status"], v["code"]) for r, v in attempt["recipients"].items()} == {
        "nobody@example.com": ("failed", 550),
        "b@example.com": ("deferred", 421),
        "c@example.com": ("deferred", 421),
    }
    assert upstream.received == []


async def test_a_server_that_refuses_ehlo_gets_helo(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """RFC 5321 §3.2: a server without service extensions refuses EHLO (500, 502) and
    takes HELO, which every server must (§4.1.1.1). The refused EHLO deferred every
    message until it expired; smtplib, aiosmtplib's own sendmail and Postfix say HELO."""
    upstream.ehlo_reply = "502 5.5.1 EHLO not implemented"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [mid] = await submit(client, message())
        body = await wait_for_state(client, mid, "sent", "failed")
    assert [a["code"] for a in body["attempts"]] == [250], body["attempts"]
    assert [r.rcpt_tos for r in upstream.received] == [["a@example.com"]]


async def test_dropped_connection_is_deferred(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.drop_at = "DATA"
    async with (
        start_gateway(relay_url=upstream.url, retry={"initial_delay": 60}) as gw,
        api(gw) as client,
    ):
        [mid] = await submit(client, message())
        body = await wait_for_state(client, mid, "deferred")
    [attempt] = body["attempts"]
    assert attempt["code"] is None and "Disconnected" in attempt["text"]
    assert body["next_attempt_at"] is not None and upstream.received == []


async def test_unreachable_relay_is_deferred(start_gateway: GatewayFactory) -> None:
    async with (
        start_gateway(relay_url="smtp://127.0.0.1:9", retry={"initial_delay": 60}) as gw,
        api(gw) as client,
    ):
        [mid] = await submit(client, message())
        body = await wait_for_state(client, mid, "deferred")
    assert body["attempts"][0]["code"] is None


async def test_idempotent_resubmit(start_gateway: GatewayFactory, upstream: Upstream) -> None:
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        [first] = await submit(client, message(id="order-42-receipt"))
        await wait_for_state(client, first, "sent")
        response = await client.post(
            "/messages", json=message(id="order-42-receipt", subject="changed")
        )
        assert response.status_code == 202
        assert response.json() == {"queued": 1, "ids": [first], "duplicates": [0], "rejected": []}
        body = (await client.get(f"/messages/{first}")).json()
        assert body["subject"] == "Hi" and body["key"] == "order-42-receipt"
    assert len(upstream.received) == 1


async def test_batch_with_one_bad_item(start_gateway: GatewayFactory, upstream: Upstream) -> None:
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        response = await client.post(
            "/messages",
            json=[
                message(to="one@example.com"),
                message(id="bad-1", to="not an address"),
                message(to="two@example.com"),
            ],
        )
        assert response.status_code == 202
        body = response.json()
        assert body["queued"] == 2 and len(body["ids"]) == 2
        [rejected] = body["rejected"]
        assert rejected["index"] == 1 and rejected["id"] == "bad-1"
        assert "not a valid address" in rejected["reason"]
        await upstream.wait_for(2)
        all_bad = await client.post(
            "/messages", json=[message(subject="x\r\nBcc: a@b.c"), {"to": 1}]
        )
        assert all_bad.status_code == 422
        assert [r["index"] for r in all_bad.json()["rejected"]] == [0, 1]
        assert all_bad.json()["ids"] == []
    assert sorted(r.rcpt_tos[0] for r in upstream.received) == [
        "one@example.com",
        "two@example.com",
    ]


async def test_cancel_list_and_errors(start_gateway: GatewayFactory) -> None:
    future = "2099-01-01T00:00:00Z"
    async with start_gateway(delivery={"enabled": False}) as gw, api(gw) as client:
        ids = await submit(client, message(send_at=future), message(), message())
        cancelled = await client.delete(f"/messages/{ids[0]}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        page = (await client.get("/messages", params={"limit": 2})).json()
        assert [m["id"] for m in page["items"]] == [ids[2], ids[1]]
        rest = (
            await client.get("/messages", params={"limit": 2, "cursor": page["next_cursor"]})
        ).json()
        assert [m["id"] for m in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
        for made_up in ("garbage", ids[0].upper(), ids[0] + "0"):  # not a page's: 422
            bad = await client.get("/messages", params={"cursor": made_up})
            assert bad.status_code == 422 and "cursor" in bad.text
            bad = await client.get("/inbox", params={"cursor": made_up})
            assert bad.status_code == 422 and "cursor" in bad.text
        only = (await client.get("/messages", params={"state": "cancelled"})).json()["items"]
        assert [m["id"] for m in only] == [ids[0]]
        again = await client.post(f"/messages/{ids[1]}/retry")  # already queued: a no-op
        assert again.status_code == 200 and again.json()["state"] == "queued"
        refused = await client.post(f"/messages/{ids[0]}/retry")
        assert refused.status_code == 409 and "cancelled" in refused.json()["detail"]
        assert (await client.get("/messages/nope")).status_code == 404
        assert (await client.get("/messages", params={"state": "bogus"})).status_code == 422


async def test_restart_keeps_queued_messages(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async with start_gateway(delivery={"enabled": False}) as gw, api(gw) as client:
        ids = await submit(client, message(to="one@example.com"), message(to="two@example.com"))
        assert {m["state"] for m in (await client.get("/messages")).json()["items"]} == {"queued"}
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        for mid in ids:
            await wait_for_state(client, mid, "sent")
    assert sorted(r.message["X-Mailgate-ID"] for r in upstream.received) == sorted(ids)


async def test_connections_are_pooled(start_gateway: GatewayFactory, upstream: Upstream) -> None:
    async with (
        start_gateway(relay_url=upstream.url, delivery={"pool_size": 2}) as gw,
        api(gw) as client,
    ):
        for i in range(6):
            [mid] = await submit(client, message(subject=f"n{i}"))
            await wait_for_state(client, mid, "sent")
    assert len(upstream.received) == 6
    assert upstream.connections == 1  # one after another: the open connection is reused


async def test_token_auth(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.SERVE, api_token="s3cret") as gw:
        async with api(gw) as anonymous:
            response = await anonymous.get("/messages")
            assert response.status_code == 401 and "token" in response.json()["detail"]
        async with api(gw, token="wrong") as wrong:
            assert (await wrong.get("/messages")).status_code == 401
        async with api(gw, token="s3cret") as client:
            assert (await client.get("/messages")).status_code == 200
            assert (
                await client.get("/inbox", headers={"Authorization": "", "X-API-Token": "s3cret"})
            ).status_code == 200
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as root:
            assert (await root.get("/healthz")).status_code == 200  # health needs no token
            assert (await root.get("/openapi.json")).json()["components"]["schemas"]["MessageIn"]


async def test_message_leased_by_a_dead_dispatcher_is_sent_after_its_lease_expires(
    start_gateway: GatewayFactory, upstream: Upstream, db_url: str
) -> None:
    from mailgate.clock import SystemClock
    from mailgate.store import Database, QueueStore

    async with start_gateway(delivery={"enabled": False}) as gw, api(gw) as client:
        [mid] = await submit(client, message())
    db = Database(db_url)
    try:  # a dispatcher that leased the message for one second and then died
        [job] = await QueueStore(db).lease("dead-node", SystemClock().now(), 1, lease_for=1.0)
        assert job.message.id == mid
    finally:
        await db.aclose()
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        assert (await client.get(f"/messages/{mid}")).json()["state"] == "sending"
        body = await wait_for_state(client, mid, "sent")
    assert len(body["attempts"]) == 1 and len(upstream.received) == 1


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_tls_relay_with_credentials(
    start_gateway: GatewayFactory, tmp_path: Path, tls: str
) -> None:
    context = server_context(tmp_path)
    async with Upstream(
        tls=tls, ssl_context=context, credentials={"relay-user": "p@ss:w/rd"}
    ) as up:
        scheme = up.url.partition("://")[0]
        relay = f"{scheme}://relay-user:p%40ss%3Aw%2Frd@127.0.0.1:{up.port}?verify=false"
        async with start_gateway(relay_url=relay) as gw, api(gw) as client:
            [mid] = await submit(client, message())
            body = await wait_for_state(client, mid, "sent", "deferred", "failed")
    assert body["state"] == "sent", body["attempts"]
    assert up.logins == ["relay-user"] and len(up.received) == 1
    assert "p@ss" not in str(body)


async def test_wrong_relay_password_defers_without_leaking_it(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Our credentials refused is our configuration's fault: deferred, never failed
    (issue 5 item 1; tests/integration/test_delivery_hardening.py goes further)."""
    context = server_context(tmp_path)
    async with Upstream(tls="starttls", ssl_context=context, credentials={"u": "right"}) as up:
        relay = f"smtp+starttls://u:wrong-secret@127.0.0.1:{up.port}?verify=false"
        async with start_gateway(relay_url=relay) as gw, api(gw) as client:
            [mid] = await submit(client, message())
            body = await wait_for_state(client, mid, "deferred")
    assert body["attempts"][0]["code"] == 535  # RFC 4954: authentication credentials invalid
    assert "wrong-secret" not in str(body)


async def test_non_ascii_address_fails_cleanly_when_upstream_lacks_smtputf8(
    start_gateway: GatewayFactory,
) -> None:
    up = Upstream(smtputf8=False)
    async with up, start_gateway(relay_url=up.url) as gw, api(gw) as client:
        [mid] = await submit(client, message(to="ü@example.com"))
        body = await wait_for_state(client, mid, "failed")
    [attempt] = body["attempts"]
    assert attempt["enhanced_code"] == "5.6.7" and "SMTPUTF8" in attempt["text"]
    assert up.received == []


async def test_gateway_on_postgresql(upstream: Upstream, postgres_url: str) -> None:
    """The whole pipeline on PostgreSQL: enqueue, lease, deliver, record, read back."""
    from mailgate.app import Gateway
    from tests.integration.conftest import fast_settings

    database = await fresh_postgres_database(postgres_url, "mailgate_gateway")
    settings = fast_settings(database, relay_url=upstream.url)
    async with Gateway(settings, mode=Mode.SERVE) as gw, api(gw) as client:
        ids = await submit(client, message(id="pg-1"), message(to="b@example.com"))
        for mid in ids:
            await wait_for_state(client, mid, "sent")
        again = await client.post("/messages", json=message(id="pg-1"))
        assert again.json()["ids"] == [ids[0]] and again.json()["duplicates"] == [0]
    assert sorted(r.message["X-Mailgate-ID"] for r in upstream.received) == sorted(ids)
