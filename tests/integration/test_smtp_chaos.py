"""Chaos in the SMTP capture server (issue 10): a chosen code at a chosen stage with a
probability, set at run time through ``/api/v1/chaos`` or Mailpit's route, answered to
real aiosmtplib sessions against ``mailgate dev`` in-process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import aiosmtplib
import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.clock import SystemClock
from mailgate.store import TokenStore
from tests.integration.conftest import GatewayFactory, api
from tests.integration.test_metrics_health import scrape, value

OFF = {"code": 451, "probability": 0.0}


@contextlib.asynccontextmanager
async def session(gw: Gateway) -> AsyncIterator[aiosmtplib.SMTP]:
    assert gw.smtp_address is not None
    host, port = gw.smtp_address
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    try:
        yield smtp
    finally:
        smtp.close()


async def subjects(gw: Gateway) -> set[str]:
    captured, _ = await gw.inbox.list("default", limit=2000)
    assert len({r.subject for r in captured}) == len(captured)
    return {r.subject for r in captured}


async def test_rcpt_451_for_half_of_1000_messages(start_gateway: GatewayFactory) -> None:
    """The issue's check: 451 at RCPT at 50 % refuses 500 ± 100 of 1,000 messages, and
    exactly the others are captured."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        put = await client.put("/chaos", json={"rcpt": {"code": 451, "probability": 50}})
        assert put.status_code == 200, put.text
        accepted, refused = set(), 0
        async with session(gw) as smtp:
            for i in range(1000):
                await smtp.mail("app@example.com")
                reply = await smtp.execute_command(b"RCPT", b"TO:<dev@example.com>")
                if reply.code == 451:
                    assert reply.message.startswith("4.3.0 Chaos: recipient refused")
                    refused += 1
                    await smtp.rset()
                    continue
                assert reply.code == 250, reply
                await smtp.data(f"Subject: m{i}\r\n\r\nbody {i}\r\n")
                accepted.add(f"m{i}")
        assert 400 <= refused <= 600
        assert await subjects(gw) == accepted
        samples = await scrape(gw)
        assert value(samples, "mailgate_smtp_messages_total", result="refused",
                     reason="chaos") == refused  # fmt: skip


def _plain(user: str, password: str) -> bytes:
    return b"PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode())


async def _until(smtp: aiosmtplib.SMTP, stage: str) -> aiosmtplib.SMTPResponse:
    """Run a transaction up to ``stage``'s command; that command's reply."""
    if stage == "auth":
        return await smtp.execute_command(b"AUTH", _plain("user", "secret"))
    reply = await smtp.execute_command(b"MAIL", b"FROM:<app@example.com>")
    if stage == "mail":
        return reply
    reply = await smtp.execute_command(b"RCPT", b"TO:<dev@example.com>")
    if stage == "rcpt":
        return reply
    try:
        await smtp.data("Subject: refused\r\n\r\nnot kept\r\n")
    except aiosmtplib.SMTPDataError as exc:
        return aiosmtplib.SMTPResponse(exc.code, exc.message)
    raise AssertionError("DATA was accepted")


@pytest.mark.parametrize(
    ("stage", "code", "what"),
    [("auth", 454, "authentication"), ("mail", 550, "sender"), ("rcpt", 452, "recipient"),
     ("data", 554, "message")],
)  # fmt: skip
async def test_each_stage_refuses_and_the_session_goes_on(
    start_gateway: GatewayFactory, stage: str, code: int, what: str
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client, session(gw) as smtp:
        await client.put("/chaos", json={stage: {"code": code, "probability": 100}})
        reply = await _until(smtp, stage)
        assert reply.code == code
        assert (
            reply.message == f"{code // 100}.3.0 Chaos: {what} refused on purpose (chaos testing)"
        )
        assert (await smtp.rset()).code == 250  # refused the command, not the connection
        await client.put("/chaos", json={})  # every probability back to 0
        assert (await smtp.execute_command(b"AUTH", _plain("user", "secret"))).code == 235
        await smtp.sendmail("app@example.com", ["dev@example.com"], "Subject: after\r\n\r\nx\r\n")
        assert await subjects(gw) == {"after"}  # at data: the refused message is not kept


async def test_the_data_stage_ends_the_transaction(start_gateway: GatewayFactory) -> None:
    """At the end of DATA or BDAT LAST, as any refused message: the next MAIL needs no
    RSET, and nothing is kept."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client, session(gw) as smtp:
        await client.put("/chaos", json={"data": {"code": 451, "probability": 100}})
        await smtp.mail("app@example.com")
        await smtp.rcpt("dev@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError, match="Chaos"):
            await smtp.data("Subject: plain\r\n\r\nx\r\n")
        await smtp.mail("app@example.com")  # a 503 (nested MAIL) would raise
        await smtp.rcpt("dev@example.com")
        body = b"Subject: chunked\r\n\r\nx\r\n"
        assert smtp.protocol is not None
        smtp.protocol.write(b"BDAT %d LAST\r\n" % len(body) + body)  # RFC 3030 §2
        reply = await smtp.protocol.read_response(timeout=10)
        assert (reply.code, reply.message[:12]) == (451, "4.3.0 Chaos:")
        assert (await smtp.execute_command(b"MAIL", b"FROM:<app@example.com>")).code == 250
        assert await subjects(gw) == set()


async def test_a_421_closes_the_connection(start_gateway: GatewayFactory) -> None:
    """RFC 5321 §3.8: after a 421 the server closes; chaos does as any 421."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await client.put("/chaos", json={"mail": {"code": 421, "probability": 100}})
        assert gw.smtp_address is not None
        reader, writer = await asyncio.open_connection(*gw.smtp_address)
        writer.write(b"HELO client.test\r\nMAIL FROM:<app@example.com>\r\n")
        async with asyncio.timeout(5):  # a server that does not close: a timeout here
            replies = await reader.read(-1)  # up to the server's close
        writer.close()
        assert replies.splitlines()[-1].startswith(b"421 4.3.0 Chaos: sender refused")


async def test_mailpits_route_and_mailgates_share_one_state(start_gateway: GatewayFactory) -> None:
    async with (
        start_gateway(Mode.DEV) as gw,
        api(gw) as client,
        httpx.AsyncClient(base_url=f"{gw.http_url}/mailpit", timeout=30) as mp,
    ):
        put = await client.put(
            "/chaos", json={"rcpt": {"code": 550, "probability": 12.5}, "data": {"probability": 5}}
        )
        assert put.json() == {
            "auth": OFF, "mail": OFF, "rcpt": {"code": 550, "probability": 12.5},
            "data": {"code": 451, "probability": 5.0},
        }  # fmt: skip
        assert (await mp.get("/api/v1/chaos")).json() == {
            "Authentication": {"ErrorCode": 451, "Probability": 0},
            "Recipient": {"ErrorCode": 550, "Probability": 12.5},
            "Sender": {"ErrorCode": 451, "Probability": 0},
        }
        # Mailpit's PUT sets its three triggers (Recipient left out: reset); data stays
        await mp.put("/api/v1/chaos", json={"Sender": {"ErrorCode": 450, "Probability": 100}})
        assert (await client.get("/chaos")).json() == {
            "auth": OFF, "mail": {"code": 450, "probability": 100.0}, "rcpt": OFF,
            "data": {"code": 451, "probability": 5.0},
        }  # fmt: skip
        async with session(gw) as smtp:  # and the SMTP server answers what it set
            reply = await smtp.execute_command(b"MAIL", b"FROM:<app@example.com>")
            assert (reply.code, reply.message[:12]) == (450, "4.3.0 Chaos:")


@pytest.mark.parametrize(
    ("body", "reason"),
    [({"rcpt": {"code": 250, "probability": 5}}, "greater than or equal to 400"),
     ({"rcpt": {"code": 600, "probability": 5}}, "less than or equal to 599"),
     ({"data": {"code": 451, "probability": 100.5}}, "less than or equal to 100"),
     ({"data": {"probability": -1}}, "greater than or equal to 0"),
     ({"smtp": {"probability": 5}}, "unknown chaos stage smtp"),
     ({"rcpt": {"odds": 5}}, "Extra inputs are not permitted")],
)  # fmt: skip
async def test_refused_settings_are_422_and_change_nothing(
    start_gateway: GatewayFactory, body: dict[str, object], reason: str
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        before = (await client.put("/chaos", json={"auth": {"probability": 1}})).json()
        refused = await client.put("/chaos", json=body)
        assert refused.status_code == 422, refused.text
        assert reason in refused.text
        assert (await client.get("/chaos")).json() == before


async def test_chaos_is_the_operators(start_gateway: GatewayFactory) -> None:
    """The triggers act on every tenant's mail: a tenant's token may not read or set them
    (on either route); the admin token may."""
    async with start_gateway(Mode.DEV, api_token="admin-token-9") as gw:
        _, tenant_token = await TokenStore(gw.accounts.db, SystemClock()).create("acme", "t")
        tenant = {"Authorization": f"Bearer {tenant_token}"}
        admin = {"Authorization": "Bearer admin-token-9"}
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
            assert (await client.get("/api/v1/chaos")).status_code == 401
            assert (await client.get("/api/v1/chaos", headers=tenant)).status_code == 403
            set_ = {"rcpt": {"probability": 5}}
            assert (await client.put("/api/v1/chaos", json=set_, headers=tenant)).status_code == 403
            mailpits = {"Recipient": {"Probability": 5}}
            put = await client.put("/mailpit/api/v1/chaos", json=mailpits, headers=tenant)
            assert put.status_code == 403
            assert (await client.put("/api/v1/chaos", json=set_, headers=admin)).status_code == 200


async def test_smtp_chaos_setting_arms_it_at_start(start_gateway: GatewayFactory) -> None:
    chaos = {"mail": {"code": 450, "probability": 100}}
    async with start_gateway(Mode.DEV, smtp={"chaos": chaos}) as gw, session(gw) as smtp:
        reply = await smtp.execute_command(b"MAIL", b"FROM:<app@example.com>")
        assert reply.code == 450


async def test_submission_never_refuses_on_purpose(start_gateway: GatewayFactory) -> None:
    """Chaos is a testing tool of the capture server: submission does not apply it."""
    chaos = {"auth": {"code": 454, "probability": 100}}
    settings = {"mode": "submission", "chaos": chaos}
    async with start_gateway(Mode.SERVE, smtp=settings) as gw, session(gw) as smtp:
        reply = await smtp.execute_command(b"AUTH", _plain("nobody", "wrong"))
        assert reply.code == 535  # checked, not refused by chaos
