"""Delivery faults of issue 5 (items 1 and 13, and the all-refused rule), on real peers.

Every upstream is a real SMTP server in this process: the scriptable aiosmtpd
:class:`~tests.peers.Upstream`, with TLS and AUTH where a test needs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailgate.app import Mode
from mailgate.deliver.smtp import CLEARTEXT_REFUSED
from mailgate.store import Database
from mailgate.store.schema import messages
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream
from tests.tls import server_context

MESSAGE = {"from": "shop@example.com", "to": "a@example.com", "subject": "Hi", "text": "t"}


async def submit(client: httpx.AsyncClient, **overrides: Any) -> str:
    response = await client.post("/messages", json={**MESSAGE, **overrides})
    assert response.status_code == 202, response.text
    mid: str = response.json()["ids"][0]
    return mid


async def wait_for_attempts(
    client: httpx.AsyncClient, mid: str, count: int, *, older_than: float = 0.0
) -> dict[str, Any]:
    """Poll until the message has ``count`` attempts and is at least ``older_than`` s old."""
    submitted = time.monotonic()
    async with asyncio.timeout(15):
        while True:
            body: dict[str, Any] = (await client.get(f"/messages/{mid}")).json()
            old_enough = time.monotonic() - submitted >= older_than
            if len(body["attempts"]) >= count and old_enough and body["state"] != "sending":
                return body
            await asyncio.sleep(0.05)


async def attempt_count(db_url: str, mid: str) -> int:
    """The count that drives backoff and giving up (not shown by the API)."""
    db = Database(db_url)
    try:
        async with db.read() as conn:
            query = select(messages.c.attempt_count).where(messages.c.id == mid)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await db.aclose()


@contextlib.asynccontextmanager
async def tls_upstream(
    tmp_path: Path, tls: str, credentials: dict[str, str] | None = None
) -> AsyncIterator[Upstream]:
    async with Upstream(
        tls=tls, ssl_context=server_context(tmp_path), credentials=credentials
    ) as up:
        yield up


async def test_a_refused_login_defers_uncounted_until_the_password_is_fixed(
    start_gateway: GatewayFactory, tmp_path: Path, db_url: str
) -> None:
    """Issue 5 item 1: ``535 5.7.8`` to our AUTH made every message fail after one try.

    A rejected login is our configuration's problem: the message is deferred, each
    attempt records the reply, and none counts against the message: not even
    ``max_age`` (1 s here) makes it give up. Fixed credentials then deliver it.
    """
    async with tls_upstream(tmp_path, "starttls", {"relay-user": "right"}) as up:
        base = f"smtp+starttls://relay-user:{{}}@127.0.0.1:{up.port}?verify=false"
        wrong = start_gateway(relay_url=base.format("wrong-secret"), retry={"max_age": 1.0})
        async with wrong as gw, api(gw) as client:
            mid = await submit(client)
            body = await wait_for_attempts(client, mid, 3, older_than=1.5)
        assert body["state"] == "deferred" and body["next_attempt_at"] is not None
        for attempt in body["attempts"]:
            assert (attempt["code"], attempt["enhanced_code"]) == (535, "5.7.8")
            assert attempt["text"] == "5.7.8 Authentication credentials invalid"
            assert attempt["recipients"]["a@example.com"]["status"] == "deferred"
        assert body["last_error"] == "5.7.8 Authentication credentials invalid"
        assert "wrong-secret" not in str(body)
        assert await attempt_count(db_url, mid) == 0  # backoff did not grow either
        assert up.logins == [] and up.received == []

        right = start_gateway(relay_url=base.format("right"), retry={"max_age": 1.0})
        async with right as gw, api(gw) as client:
            body = await wait_for_state(client, mid, "sent")
    assert body["attempts"][-1]["code"] == 250
    assert up.logins == ["relay-user"] and len(up.received) == 1


async def test_a_refused_login_over_implicit_tls_is_deferred_too(
    start_gateway: GatewayFactory, tmp_path: Path, db_url: str
) -> None:
    async with tls_upstream(tmp_path, "implicit", {"relay-user": "right"}) as up:
        relay = f"smtps://relay-user:wrong@127.0.0.1:{up.port}?verify=false"
        async with start_gateway(relay_url=relay) as gw, api(gw) as client:
            mid = await submit(client)
            body = await wait_for_attempts(client, mid, 2)
    assert body["state"] == "deferred", body
    codes = {(a["code"], a["enhanced_code"]) for a in body["attempts"]}
    assert codes == {(535, "5.7.8")}, body["attempts"]
    assert await attempt_count(db_url, mid) == 0


async def test_smtp_url_upgrades_with_starttls_when_offered(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Issue 5 item 13: ``smtp://user:pass@host`` never upgraded, so AUTH could not work.

    This upstream takes neither AUTH nor MAIL before STARTTLS: delivery proves the upgrade.
    """
    async with tls_upstream(tmp_path, "starttls", {"relay-user": "right"}) as up:
        relay = f"smtp://relay-user:right@127.0.0.1:{up.port}?verify=false"
        async with start_gateway(relay_url=relay) as gw, api(gw) as client:
            mid = await submit(client)
            body = await wait_for_state(client, mid, "sent", "failed", "deferred")
    assert body["state"] == "sent", body["attempts"]
    assert up.logins == ["relay-user"] and len(up.received) == 1


async def test_opportunistic_starttls_without_credentials_takes_a_self_signed_certificate(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """No credentials to protect: encrypt when offered (RFC 7435), as a plain relay would
    have sent in clear anyway; a certificate we cannot verify must not stop the mail."""
    async with (
        tls_upstream(tmp_path, "starttls") as up,
        start_gateway(relay_url=f"smtp://127.0.0.1:{up.port}") as gw,
        api(gw) as client,
    ):
        mid = await submit(client)
        body = await wait_for_state(client, mid, "sent", "failed", "deferred")
    assert body["state"] == "sent", body["attempts"]
    assert body["attempts"][0]["transport"] == f"smtp://127.0.0.1:{up.port}"


async def test_credentials_are_never_sent_in_clear_unless_the_url_allows_it(
    start_gateway: GatewayFactory, db_url: str
) -> None:
    """No STARTTLS offered: refuse to AUTH (deferred, uncounted), or send with
    ``?auth_plaintext=true``."""
    async with Upstream(credentials={"relay-user": "right"}) as up:
        relay = f"smtp://relay-user:right@127.0.0.1:{up.port}"
        async with start_gateway(relay_url=relay) as gw, api(gw) as client:
            mid = await submit(client)
            body = await wait_for_attempts(client, mid, 2)
        assert body["state"] == "deferred"
        assert {a["text"] for a in body["attempts"]} == {CLEARTEXT_REFUSED}
        assert CLEARTEXT_REFUSED == (
            "refusing to send credentials without TLS"
            " (add ?auth_plaintext=true to the relay URL to allow it)"
        )
        assert await attempt_count(db_url, mid) == 0
        assert up.logins == [] and up.received == []

        allowed = start_gateway(relay_url=f"{relay}?auth_plaintext=true")
        async with allowed as gw, api(gw) as client:
            await wait_for_state(client, mid, "sent")
    assert up.logins == ["relay-user"] and len(up.received) == 1


async def test_every_recipient_refused_keeps_the_temporary_refusal(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """Issue 5: keeping the *first* refusal (550) instead of the temporary one passed.

    The attempt reports the 451, so the message reads as what it is: waiting for b.
    """
    upstream.rcpt_replies["a@example.com"] = "550 5.1.1 <a@example.com>: no such user"
    upstream.rcpt_replies["b@example.com"] = "451 4.2.1 <b@example.com>: mailbox busy"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        mid = await submit(client, to=["a@example.com", "b@example.com"])
        body = await wait_for_state(client, mid, "deferred")
        [first] = body["attempts"]
        assert (first["code"], first["enhanced_code"]) == (451, "4.2.1")
        assert body["last_error"] == "4.2.1 <b@example.com>: mailbox busy"
        assert first["recipients"]["a@example.com"]["status"] == "failed"
        assert first["recipients"]["b@example.com"]["status"] == "deferred"
        del upstream.rcpt_replies["b@example.com"]
        body = await wait_for_state(client, mid, "sent")
    assert [r.rcpt_tos for r in upstream.received] == [["b@example.com"]]
    assert list(body["attempts"][1]["recipients"]) == ["b@example.com"]


@contextlib.asynccontextmanager
async def scripted_server(greeting: bytes, ehlo: bytes = b"") -> AsyncIterator[int]:
    """A bare SMTP peer for what aiosmtpd cannot be told to do: answer the greeting
    and EHLO with fixed replies, then ``221`` to anything else."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                is_ehlo = line[:4].upper() in (b"EHLO", b"HELO")
                writer.write(ehlo if is_ehlo else b"221 2.0.0 bye\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_a_5xx_greeting_defers_instead_of_failing_every_message(
    start_gateway: GatewayFactory, db_url: str
) -> None:
    """A refusal before any transaction is about the server, not the message
    (Postfix's ``smtp_skip_5xx_greeting``): deferred, and it still counts."""
    greeting = b"554 5.3.2 upstream.test not accepting mail right now\r\n"
    async with (
        scripted_server(greeting) as port,
        start_gateway(relay_url=f"smtp://127.0.0.1:{port}", retry={"initial_delay": 60}) as gw,
        api(gw) as client,
    ):
        mid = await submit(client)
        body = await wait_for_state(client, mid, "deferred", "failed")
    assert body["state"] == "deferred" and body["next_attempt_at"] is not None
    [attempt] = body["attempts"]
    assert (attempt["code"], attempt["enhanced_code"]) == (554, "5.3.2")
    assert await attempt_count(db_url, mid) == 1  # max_age still ends a relay that never recovers


async def test_credentials_for_a_server_that_offers_no_auth_are_a_configuration_error(
    start_gateway: GatewayFactory, db_url: str
) -> None:
    """Sending without the configured login could only end in a refused MAIL."""
    greeting, ehlo = b"220 upstream.test ESMTP\r\n", b"250-upstream.test\r\n250 8BITMIME\r\n"
    async with scripted_server(greeting, ehlo) as port:
        relay = f"smtp://u:p@127.0.0.1:{port}?auth_plaintext=true"
        async with start_gateway(relay_url=relay) as gw, api(gw) as client:
            mid = await submit(client)
            body = await wait_for_attempts(client, mid, 2)
    assert body["state"] == "deferred"
    refused = "login failed: The SMTP AUTH extension is not supported by this server."
    assert all(a["text"].startswith(refused) for a in body["attempts"]), body["attempts"]
    assert await attempt_count(db_url, mid) == 0


async def test_the_start_up_log_names_the_relay_as_a_url_without_credentials(
    start_gateway: GatewayFactory, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 5 item 13: it printed ``smtp:127.0.0.1:2526`` (no ``//``)."""
    caplog.set_level(logging.INFO, logger="mailgate.app")
    async with start_gateway(relay_url=f"smtp://u:secret@127.0.0.1:{upstream.port}"):
        pass
    assert f"relaying through smtp://127.0.0.1:{upstream.port}" in caplog.messages
    assert "secret" not in caplog.text


class DropsOnce(Upstream):
    """Drops the connection at ``drop_at`` once, then behaves."""

    def _drop(self, server: Any, verb: str) -> bool:
        dropped = super()._drop(server, verb)
        if dropped:
            self.drop_at = None
        return dropped


async def test_a_pooled_connection_is_replaced_only_before_mail_was_accepted(
    start_gateway: GatewayFactory,
) -> None:
    """Gone stale before MAIL: reconnect within the attempt, nothing was sent yet.
    Dropped after MAIL (here at DATA): the upstream may have the message, so the
    attempt ends deferred instead of sending it again at once on a new connection."""
    async with (
        DropsOnce() as up,
        start_gateway(relay_url=up.url, delivery={"pool_size": 1}) as gw,
        api(gw) as client,
    ):
        first = await submit(client, subject="1")
        await wait_for_state(client, first, "sent")
        up.drop_at = "MAIL"
        stale = await wait_for_state(client, await submit(client, subject="2"), "sent")
        assert len(stale["attempts"]) == 1 and up.connections == 2
        up.drop_at = "DATA"
        dropped = await wait_for_state(client, await submit(client, subject="3"), "sent")
    assert [a["code"] for a in dropped["attempts"]] == [None, 250]
    assert "Disconnected" in dropped["attempts"][0]["text"]


async def test_the_capture_transport_keeps_the_whole_envelope(
    start_gateway: GatewayFactory,
) -> None:
    """Capture stands in for the relay in development: every RCPT, bcc included."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        mid = await submit(
            client, to=["Ann <a@example.com>"], cc=["c@example.com"], bcc=["s@example.com"]
        )
        body = await wait_for_state(client, mid, "sent")
        [captured] = (await client.get("/inbox")).json()["items"]
    assert captured["envelope"] == {
        "from": "shop@example.com",
        "to": ["a@example.com", "c@example.com", "s@example.com"],
    }
    [attempt] = body["attempts"]
    assert attempt["transport"] == "capture" and attempt["text"] == f"captured as {captured['id']}"
