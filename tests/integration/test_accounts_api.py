"""/api/v1/accounts through a real gateway: CRUD, validation, the account test against
real aiosmtpd upstreams and a Postmark-contract server, enable-after-test, the
configured relay as ``default``, and tenant isolation (accounts, messages, inbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailgate.app import Gateway
from mailgate.clock import SystemClock
from mailgate.crypto import generate_key
from mailgate.store import TokenStore
from tests.accounts_peers import PASSWORD, smtp_account
from tests.integration.conftest import GatewayFactory, api
from tests.peers import Upstream
from tests.postmark_peer import PostmarkPeer
from tests.tls import server_context

KEY = {"secret_key": generate_key()}
CREDENTIALS = {"agent": PASSWORD}


async def test_crud_never_returns_a_secret(start_gateway: GatewayFactory) -> None:
    async with start_gateway(**KEY) as gw, api(gw) as client:
        body = smtp_account_body("agent1", port=2525)
        created = await client.post("/accounts", json=body)
        assert created.status_code == 201, created.text
        account = created.json()
        assert account["smtp_password_set"] is True and "smtp_password" not in account
        assert account["is_outbound_enabled"] is False and account["source"] == "api"
        assert account["limits"]["pool_size"] == 3 and account["imap_folder"] == "INBOX"
        listed = (await client.get("/accounts")).json()["accounts"]
        assert [a["id"] for a in listed] == ["agent1"]
        patched = await client.patch("/accounts/agent1", json={"limits": {"per_minute": 60}})
        assert patched.json()["limits"]["per_minute"] == 60
        assert patched.json()["smtp_password_set"] is True  # kept when not named
        cleared = await client.patch("/accounts/agent1", json={"smtp_password": None})
        assert cleared.json()["smtp_password_set"] is False
        assert (await client.post("/accounts", json=body)).status_code == 409
        assert (await client.delete("/accounts/agent1")).status_code == 204
        assert (await client.get("/accounts/agent1")).status_code == 404
        for text in (created.text, patched.text, cleared.text):
            assert PASSWORD not in text


def smtp_account_body(id: str, port: int) -> dict[str, Any]:
    return {
        "id": id,
        "from": [f"{id}@example.com", "@agents.example"],
        "smtp_host": "smtp.example.com",
        "smtp_port": port,
        "smtp_username": id,
        "smtp_password": PASSWORD,
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"smtp_host": "not a host!"}, "smtp_host"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"smtp_port": 65536}, "smtp_port"),
        ({"smtp_security": "tls"}, "smtp_security"),
        ({"smtp_auth": "cram-md5"}, "smtp_auth"),
        ({"from": ["not an address"]}, "from"),
        ({"transport": "sendgrid"}, "transport"),
        ({"id": "bad id/"}, "id"),
        ({"unknown": 1}, "unknown"),
        ({"smtp_password": [PASSWORD]}, "smtp_password"),  # the answer must not echo it
        ({"imap_password": {"p": PASSWORD}}, "imap_password"),
    ],
)
async def test_invalid_fields_are_422_naming_the_field_never_echoing_input(
    start_gateway: GatewayFactory, change: dict[str, Any], field: str
) -> None:
    async with start_gateway(**KEY) as gw, api(gw) as client:
        response = await client.post("/accounts", json=smtp_account_body("a", 25) | change)
        assert response.status_code == 422, response.text
        problems = response.json()["detail"]
        assert any(field in p["loc"] for p in problems), problems
        assert all(p["msg"] for p in problems)
        assert PASSWORD not in response.text


async def test_a_patch_is_validated_and_an_incomplete_account_fails_its_test(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(**KEY) as gw, api(gw) as client:
        await client.post("/accounts", json=smtp_account_body("a", 25))
        response = await client.patch("/accounts/a", json={"smtp_port": 70000})
        assert response.status_code == 422 and "smtp_port" in response.text
        assert (await client.get("/accounts/a")).json()["smtp_port"] == 25  # unchanged
        response = await client.patch("/accounts/a", json={"smtp_host": None})
        assert response.status_code == 200 and PASSWORD not in response.text
        report = (await client.post("/accounts/a/test")).json()
        assert report["steps"] == [{"name": "connect", "ok": False, "reply": "no smtp_host is set"}]
        assert (await client.post("/accounts/a/enable")).status_code == 409


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_enable_is_refused_until_a_test_passes_since_the_settings_changed(
    start_gateway: GatewayFactory, tmp_path: Path, tls: str
) -> None:
    context = server_context(tmp_path)
    async with (
        Upstream(tls=tls, credentials=CREDENTIALS, ssl_context=context) as up,
        start_gateway(**KEY) as gw,
        api(gw) as client,
    ):
        assert (await client.post("/accounts", json=smtp_account(up))).status_code == 201
        refused = await client.post("/accounts/agent1/enable")
        assert refused.status_code == 409 and "test" in refused.json()["detail"]
        tested = (await client.post("/accounts/agent1/test")).json()
        assert tested["ok"] is True, tested
        names = [s["name"] for s in tested["steps"]]
        assert names[:2] == ["connect", "tls"] or names[:3] == ["connect", "ehlo", "tls"]
        assert names[-3:] == ["auth", "noop", "quit"]
        assert tested["account"]["connection_last_ok_at"] is not None
        assert up.logins == ["agent"]
        enabled = await client.post("/accounts/agent1/enable")
        assert enabled.status_code == 200 and enabled.json()["is_outbound_enabled"] is True
        # a new password switches outbound off and needs a new test
        changed = await client.patch("/accounts/agent1", json={"smtp_password": "new"})
        assert changed.json()["is_outbound_enabled"] is False
        again = await client.patch("/accounts/agent1", json={"is_outbound_enabled": True})
        assert again.status_code == 409
        failed = (await client.post("/accounts/agent1/test")).json()
        assert failed["ok"] is False
        assert (await client.post("/accounts/agent1/enable")).status_code == 409
        await client.patch("/accounts/agent1", json={"smtp_password": PASSWORD})
        assert (await client.post("/accounts/agent1/test")).json()["ok"] is True
        ok = await client.patch("/accounts/agent1", json={"is_outbound_enabled": True})
        assert ok.status_code == 200 and ok.json()["is_outbound_enabled"] is True


async def test_wrong_password_fails_the_auth_step_with_the_servers_reply(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    context = server_context(tmp_path)
    async with (
        Upstream(tls="starttls", credentials=CREDENTIALS, ssl_context=context) as up,
        start_gateway(**KEY) as gw,
        api(gw) as client,
    ):
        await client.post("/accounts", json=smtp_account(up, smtp_password="wrong"))
        report = (await client.post("/accounts/agent1/test")).json()
        assert report["ok"] is False
        failed = [s for s in report["steps"] if not s["ok"]]
        assert [s["name"] for s in failed] == ["auth"] and failed[0]["reply"].startswith("535")
        assert [s["name"] for s in report["steps"]][-1] == "auth"  # stopped there
        account = report["account"]
        assert account["connection_error"].startswith("auth: 535")
        assert account["connection_last_ok_at"] is None


async def test_an_unreachable_server_fails_the_connect_step(start_gateway: GatewayFactory) -> None:
    async with start_gateway(**KEY) as gw, api(gw) as client:
        async with Upstream() as up:
            port = up.port  # closed again below: nothing listens there
        body = smtp_account_body("a", port) | {"smtp_host": "127.0.0.1", "smtp_security": "none"}
        await client.post("/accounts", json=body)
        report = (await client.post("/accounts/a/test")).json()
        assert [(s["name"], s["ok"]) for s in report["steps"]] == [("connect", False)]
        assert report["account"]["connection_error"].startswith("connect:")


async def test_postmark_account_test_checks_the_server_token(
    start_gateway: GatewayFactory,
) -> None:
    async with PostmarkPeer("pm-token-1") as pm:
        settings = KEY | {"postmark": {"base_url": pm.url}}
        async with start_gateway(**settings) as gw, api(gw) as client:
            for id, token, ok in (("good", "pm-token-1", True), ("bad", "pm-wrong", False)):
                body = {"id": id, "transport": "postmark", "postmark_token": token}
                created = await client.post("/accounts", json=body)
                assert created.status_code == 201, created.text
                assert created.json()["postmark_token_set"] is True
                report = (await client.post(f"/accounts/{id}/test")).json()
                assert report["ok"] is ok, report
                assert token not in str(report)
            assert report["steps"][-1]["reply"].startswith("401")


async def test_serve_without_a_key_refuses_to_store_a_secret(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, api(gw) as client:
        refused = await client.post("/accounts", json=smtp_account_body("a", 25))
        assert refused.status_code == 409
        assert "MAILGATE_SECRET_KEY" in refused.json()["detail"]
        assert "mailgate secrets generate" in refused.json()["detail"]
        plain = smtp_account_body("a", 25) | {"smtp_auth": "none", "smtp_password": None}
        plain.pop("smtp_username")
        assert (await client.post("/accounts", json=plain)).status_code == 201


async def test_the_configured_relay_is_the_read_only_account_default(
    start_gateway: GatewayFactory,
) -> None:
    relay = f"smtp+starttls://relayuser:{PASSWORD}@127.0.0.1:2525"
    async with start_gateway(relay_url=relay, **KEY) as gw, api(gw) as client:
        response = await client.get("/accounts")
        assert PASSWORD not in response.text
        (default,) = response.json()["accounts"]
        assert default["id"] == "default" and default["source"] == "config"
        assert default["smtp_password_set"] is True and default["smtp_port"] == 2525
        assert default["is_outbound_enabled"] is True
        assert (await client.get("/accounts/default")).json()["source"] == "config"
        patch = await client.patch("/accounts/default", json={"smtp_port": 25})
        assert patch.status_code == 409 and "MAILGATE_RELAY_URL" in patch.json()["detail"]
        assert (await client.delete("/accounts/default")).status_code == 409
        assert (await client.post("/accounts/default/disable")).status_code == 409


async def tenant_token(gw: Gateway, tenant: str) -> str:
    _, token = await TokenStore(gw.accounts.db, SystemClock()).create(tenant, "test")
    return token


async def test_tenants_see_only_their_own_accounts_messages_and_inbox(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(api_token="admin-token-1", **KEY) as gw:
        token_a, token_b = await tenant_token(gw, "a"), await tenant_token(gw, "b")
        async with api(gw, token_a) as a, api(gw, token_b) as b, api(gw, "nope") as stranger:
            assert (await stranger.get("/accounts")).status_code == 401
            assert (await a.post("/accounts", json=smtp_account_body("x", 25))).status_code == 201
            assert (await b.get("/accounts")).json()["accounts"] == []
            assert (await b.get("/accounts/x")).status_code == 404
            assert (await b.patch("/accounts/x", json={"smtp_port": 26})).status_code == 404
            assert (await b.delete("/accounts/x")).status_code == 404
            assert (await b.post("/accounts/x/test")).status_code == 404
            message = {"to": ["r@example.com"], "subject": "tenant a", "text": "hi"}
            sent = await a.post("/messages", json=message)
            (message_id,) = sent.json()["ids"]
            assert (await a.get(f"/messages/{message_id}")).status_code == 200
            assert (await b.get(f"/messages/{message_id}")).status_code == 404
            assert (await b.post(f"/messages/{message_id}/cancel")).status_code == 404
            inbox_a = await _captured(a)
            assert (await b.get("/inbox")).json()["items"] == []
            assert (await b.get(f"/inbox/{inbox_a}")).status_code == 404
        async with api(gw, "admin-token-1") as admin:  # the admin token is tenant default
            assert (await admin.get("/accounts")).json()["accounts"] == []


async def _captured(client: Any) -> str:
    """The id of the one message captured for the client's tenant (serve without relay)."""
    import asyncio

    async with asyncio.timeout(10):
        while True:
            items = (await client.get("/inbox")).json()["items"]
            if items:
                return str(items[0]["id"])
            await asyncio.sleep(0.05)
