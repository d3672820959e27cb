"""Routing through the account directory, end to end: accounts made with the REST API,
mail posted with the REST API, real aiosmtpd upstreams (one per account) receiving it."""

from __future__ import annotations

import asyncio
from typing import Any

import dkim
import httpx

from mailgate.crypto import generate_key
from tests.accounts_peers import PASSWORD, smtp_account
from tests.content_peers import rsa_key_pair
from tests.integration.conftest import GatewayFactory, api, wait_for_message, wait_for_state
from tests.peers import Upstream

KEY = {"secret_key": generate_key()}
CREDENTIALS = {"agent": PASSWORD}


async def _ready_account(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    """Create, test and enable an account (enable is refused until a test passed)."""
    assert (await client.post("/accounts", json=body)).status_code == 201
    tested = await client.post(f"/accounts/{body['id']}/test")
    assert tested.json()["ok"] is True, tested.text
    enabled = await client.post(f"/accounts/{body['id']}/enable")
    assert enabled.status_code == 200, enabled.text


def _mail(**fields: Any) -> dict[str, Any]:
    return {"to": "rcpt@example.org", "subject": "routed", "text": "hello", **fields}


async def test_each_message_goes_through_its_own_account(start_gateway: GatewayFactory) -> None:
    async with (
        Upstream(credentials=CREDENTIALS) as one,
        Upstream(credentials=CREDENTIALS) as two,
        start_gateway(**KEY) as gw,
        api(gw) as client,
    ):
        await _ready_account(client, smtp_account(one, "one"))
        await _ready_account(client, smtp_account(two, "two", **{"from": ["@two.example"]}))
        named = await client.post("/messages", json=_mail(account="one"))
        by_sender = await client.post("/messages", json=_mail(**{"from": "bot@two.example"}))
        [named_id], [sender_id] = named.json()["ids"], by_sender.json()["ids"]

        sent_named = await wait_for_state(client, named_id, "sent")
        sent_by_sender = await wait_for_state(client, sender_id, "sent")
        assert [r.rcpt_tos for r in one.received] == [["rcpt@example.org"]]
        assert [r.mail_from for r in two.received] == ["bot@two.example"]
        assert sent_named["attempts"][0]["account"] == "one"
        assert sent_by_sender["attempts"][0]["account"] == "two"
        # one login for the account test, one for the pooled session that sent
        assert one.logins == ["agent", "agent"] and two.logins == ["agent", "agent"]


async def test_mail_for_a_disabled_account_waits_then_goes_once_enabled(
    start_gateway: GatewayFactory,
) -> None:
    async with (
        Upstream(credentials=CREDENTIALS) as up,
        start_gateway(**KEY) as gw,
        api(gw) as client,
    ):
        assert (await client.post("/accounts", json=smtp_account(up, "later"))).status_code == 201
        [message_id] = (await client.post("/messages", json=_mail(account="later"))).json()["ids"]
        waiting = await wait_for_message(client, message_id, lambda b: b["wait_reason"])
        await asyncio.sleep(0.3)  # a few dispatcher polls more: it goes nowhere meanwhile
        waiting = (await client.get(f"/messages/{message_id}")).json()
        assert waiting["state"] == "queued" and waiting["attempts"] == []
        assert "later" in waiting["wait_reason"] and up.received == []

        assert (await client.post("/accounts/later/test")).json()["ok"] is True
        assert (await client.post("/accounts/later/enable")).status_code == 200
        sent = await wait_for_state(client, message_id, "sent")
        assert sent["wait_reason"] is None and len(up.received) == 1
        assert [a["counted"] for a in sent["attempts"]] == [True]


async def test_an_unknown_account_waits_and_never_falls_back_to_another_route(
    start_gateway: GatewayFactory,
) -> None:
    async with Upstream() as relay, start_gateway(relay_url=relay.url) as gw, api(gw) as client:
        [message_id] = (await client.post("/messages", json=_mail(account="ghost"))).json()["ids"]
        [other_id] = (await client.post("/messages", json=_mail())).json()["ids"]
        await wait_for_state(client, other_id, "sent")  # the relay works...
        await wait_for_message(client, message_id, lambda b: b["wait_reason"])
        await asyncio.sleep(0.3)  # a few dispatcher polls more
        ghost = (await client.get(f"/messages/{message_id}")).json()
        assert ghost["state"] == "queued"  # ...but is not used for another account's mail
        assert "ghost" in ghost["wait_reason"]
        assert len(relay.received) == 1


async def test_a_changed_account_is_used_at_once_by_new_mail(
    start_gateway: GatewayFactory,
) -> None:
    """Changing an account drops its cached transport: the next message uses the new server."""
    async with (
        Upstream(credentials=CREDENTIALS) as old,
        Upstream(credentials=CREDENTIALS) as new,
        start_gateway(**KEY) as gw,
        api(gw) as client,
    ):
        await _ready_account(client, smtp_account(old, "moving"))
        [first] = (await client.post("/messages", json=_mail(account="moving"))).json()["ids"]
        await wait_for_state(client, first, "sent")
        patched = await client.patch("/accounts/moving", json={"smtp_port": new.port})
        assert patched.json()["is_outbound_enabled"] is False  # connection changed: test again
        assert (await client.post("/accounts/moving/test")).json()["ok"] is True
        assert (await client.post("/accounts/moving/enable")).status_code == 200
        [second] = (await client.post("/messages", json=_mail(account="moving"))).json()["ids"]
        await wait_for_state(client, second, "sent")
        assert len(old.received) == 1 and len(new.received) == 1


async def test_an_account_made_with_dkim_signs_what_it_sends(start_gateway: GatewayFactory) -> None:
    """DKIM set through the API reaches the bytes the upstream receives, and verifies."""
    private, public = rsa_key_pair()

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        if name == b"mg._domainkey.signed.example.":
            return f"v=DKIM1; k=rsa; p={public}".encode()
        return None

    async with (
        Upstream(credentials=CREDENTIALS) as up,
        start_gateway(**KEY) as gw,
        api(gw) as client,
    ):
        body = smtp_account(up, "signer", **{"from": ["@signed.example"]})
        body["dkim"] = {"domain": "signed.example", "selector": "mg", "private_key": private}
        await _ready_account(client, body)
        shown = (await client.get("/accounts/signer")).json()["dkim"]
        assert shown == {"domain": "signed.example", "selector": "mg", "private_key_set": True}
        mail = _mail(**{"from": "news@signed.example"})
        [message_id] = (await client.post("/messages", json=mail)).json()["ids"]
        await wait_for_state(client, message_id, "sent")
        [received] = up.received
        assert received.raw.startswith(b"DKIM-Signature:")
        assert dkim.verify(received.raw, dnsfunc=txt)
