"""The Mailpit API's parts wired in the composition root (issue 10): release through the
relay under ``mailgate dev`` with ``inbox.release_allow``, and ``/api/v1/info``'s database."""

from __future__ import annotations

import asyncio

from mailgate.app import Mode
from tests.integration.conftest import GatewayFactory, api, send_raw
from tests.integration.test_mailpit_api import mailpit, rich_message, send
from tests.peers import Upstream


async def test_release_through_the_relay_with_an_allow_list(
    start_gateway: GatewayFactory,
) -> None:
    async with Upstream() as upstream:
        settings = {"relay_url": upstream.url, "inbox": {"release_allow": ["example.net"]}}
        async with start_gateway(Mode.DEV, **settings) as gw, mailpit(gw) as mp:
            await send(gw, rich_message())
            latest = (await mp.get("/api/v1/messages")).json()["messages"][0]["ID"]
            refused = await mp.post(
                f"/api/v1/message/{latest}/release",
                json={"To": ["ok@example.net", "no@example.com"]},
            )
            assert (refused.status_code, refused.text) == (
                400, "Failed: Address do not match the allowlist: no@example.com"
            )  # fmt: skip
            bad = await mp.post(f"/api/v1/message/{latest}/release", json={"To": ["x"]})
            assert (bad.status_code, bad.text) == (400, "Invalid email address: x")
            ok = await mp.post(
                f"/api/v1/message/{latest}/release", json={"To": ["Ann <ann@sub.example.net>"]}
            )
            assert (ok.status_code, ok.text) == (200, "ok")
            await asyncio.wait_for(upstream.arrived.wait(), 10)
            [received] = upstream.received
            assert received.rcpt_tos == ["ann@sub.example.net"]
            assert received.mail_from == "shop@example.com"
            assert received.message["Subject"] == "Your receipt"
            assert received.message["Message-ID"] != "<Your-receipt@example.com>"
            assert received.message["Bcc"] is None
            # the copy left: the inbox still holds the one captured message
            assert (await mp.get("/api/v1/messages")).json()["total"] == 1
            assert (await mp.get("/api/v1/webui")).json()["MessageRelay"]["Enabled"] is True


async def test_info_names_the_database(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send(gw, rich_message())
        info = (await mp.get("/api/v1/info")).json()
        assert info["Database"].endswith(".sqlite3") and info["DatabaseSize"] > 0


async def test_release_refuses_a_recipient_with_a_control_character_or_two_addresses(
    start_gateway: GatewayFactory,
) -> None:
    """A NUL in a release recipient passed the address check; the store made it U+FFFD and
    the relay was sent ``RCPT TO:<a@example.net\ufffd>``. An entry holding two addresses
    released to the first only, the second dropped without a word. Both are refused, as
    Mailpit refuses what ``mail.ParseAddress`` cannot read as one address."""
    async with (
        Upstream() as upstream,
        start_gateway(Mode.DEV, relay_url=upstream.url) as gw,
        mailpit(gw) as mp,
    ):
        await send(gw, rich_message())
        latest = (await mp.get("/api/v1/messages")).json()["messages"][0]["ID"]
        for to in ("a@example.net\x00", "a\x01b@example.net", "a@example.net, b@example.org"):
            refused = await mp.post(f"/api/v1/message/{latest}/release", json={"To": [to]})
            assert refused.status_code == 400, (to, refused.text)
            assert refused.text.startswith("Invalid email address: ")
        ok = await mp.post(f"/api/v1/message/{latest}/release", json={"To": ["c@example.net"]})
        assert (ok.status_code, ok.text) == (200, "ok")
        async with api(gw) as client:  # a release is queued before its answer
            queued = (await client.get("/messages")).json()["items"]
        assert [m["to"] for m in queued] == [["c@example.net"]]


async def test_release_of_a_from_address_with_a_control_character_uses_the_envelope(
    start_gateway: GatewayFactory,
) -> None:
    """A captured ``From: <a\\x00b@example.com>`` was taken as the release's envelope
    sender and relayed as ``MAIL FROM:<a\\ufffdb@example.com>`` (the store's replacement
    for NUL); such an address is skipped and the captured MAIL FROM is used."""
    raw = b"From: <a\x00b@example.com>\r\nTo: b@example.com\r\nSubject: nul\r\n\r\nhi\r\n"
    async with (
        Upstream() as upstream,
        start_gateway(Mode.DEV, relay_url=upstream.url) as gw,
        mailpit(gw) as mp,
    ):
        await send_raw(gw, raw)
        latest = (await mp.get("/api/v1/messages")).json()["messages"][0]["ID"]
        ok = await mp.post(f"/api/v1/message/{latest}/release", json={"To": ["c@example.net"]})
        assert (ok.status_code, ok.text) == (200, "ok")
        await asyncio.wait_for(upstream.arrived.wait(), 10)
        [received] = upstream.received
        assert received.mail_from == "a@example.com"
