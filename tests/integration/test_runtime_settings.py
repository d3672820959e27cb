"""Settings changed at run time (issue 11): applied without a restart, stored so they
outlive one, picked up by another process on the same database, refused whole when
wrong; boot-only settings shown with their secrets redacted."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from mailgate import app as app_module
from mailgate.app import Gateway, Mode
from mailgate.clock import SystemClock
from mailgate.services.runtime import boot_view
from mailgate.settings import Settings
from mailgate.store import TokenStore
from mailgate.store.runtime_settings import RuntimeSettingsStore
from tests.integration.conftest import GatewayFactory, api

RELAY_PASSWORD = "relay-pass-Zq81"
TOKEN = "admin-token-Kq37"


async def _patch(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.patch("/settings", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _send(gw: Gateway, subject: str) -> None:
    assert gw.smtp_address is not None
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", subject
    msg.set_content("x")
    with smtplib.SMTP(*gw.smtp_address, timeout=10) as client:
        client.send_message(msg)


def test_a_password_in_a_plain_url_setting_is_masked() -> None:
    settings = Settings(db_url="postgresql://mg:pg-secret-9@db.example:5432/mail")
    assert boot_view(settings)["db_url"] == "postgresql://mg:**********@db.example:5432/mail"


async def _subjects(client: httpx.AsyncClient) -> list[str]:
    items = (await client.get("/inbox", params={"limit": 100})).json()["items"]
    return sorted(item["subject"] for item in items)


async def test_a_change_applies_at_once_and_outlives_a_restart(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        before = (await client.get("/settings")).json()
        assert before["changed"] == []
        assert before["runtime"]["inbox.max_messages"] == 1000
        body = await _patch(
            client,
            {"inbox.max_messages": 2, "retry.initial_delay": 7.5, "log_level": "DEBUG"},
        )
        assert body["changed"] == ["inbox.max_messages", "log_level", "retry.initial_delay"]
        assert body["runtime"]["retry.initial_delay"] == 7.5
        assert body["runtime"]["log_level"] == "DEBUG"
        assert body["boot"]["retry"]["initial_delay"] == 0.2  # the configured one, shown
        # in force without a restart: the inbox keeps 2, the next retry waits 7.5 s
        for i in range(3):
            await asyncio.to_thread(_send, gw, f"m{i}")
        assert await _subjects(client) == ["m1", "m2"]
        assert gw.dispatcher.retry.initial_delay == 7.5
        assert logging.getLogger().level == logging.DEBUG
        await _patch(client, {"delivery.pace_burst": 5})  # the accounts' token buckets
        assert gw.pacer.burst == 5
        await _patch(client, {"delivery.pace_burst": None})
        assert gw.pacer.burst == 2

    async with start_gateway(Mode.DEV) as gw, api(gw) as client:  # the same database
        body = (await client.get("/settings")).json()
        assert body["changed"] == ["inbox.max_messages", "log_level", "retry.initial_delay"]
        assert body["runtime"]["inbox.max_messages"] == 2
        assert gw.dispatcher.retry.initial_delay == 7.5
        # null: back to the configured value, at once
        body = await _patch(client, {"retry.initial_delay": None, "log_level": None})
        assert body["changed"] == ["inbox.max_messages"]
        assert gw.dispatcher.retry.initial_delay == 0.2
        assert logging.getLogger().level != logging.DEBUG


async def test_a_wrong_value_is_refused_naming_it_and_nothing_changes(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        for body, named in [
            ({"retry.jitter": 5}, "retry.jitter"),
            ({"inbox.max_messages": -1, "retry.initial_delay": 1}, "inbox.max_messages"),
            (
                {"smtp.chaos": {"rcpt": {"code": 250, "probability": 50}}},
                "greater than or equal to 400",
            ),
            ({"smtp.chaos": {"everything": {}}}, "unknown chaos stage everything"),
            ({"log_level": "LOUD"}, "log_level"),
            ({"delivery.lease_seconds": 5}, "delivery.lease_seconds"),
            ({"delivery.pace_burst": 0}, "delivery.pace_burst"),
            ({"poll_interval": 0}, "poll_interval"),
        ]:
            response = await client.patch("/settings", json=body)
            assert response.status_code == 422, body
            assert named in response.text, response.text
        settings = (await client.get("/settings")).json()
        assert settings["changed"] == []
        assert gw.dispatcher.retry.initial_delay == 0.2


async def test_chaos_and_retention_changed_at_run_time(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV, retention={"interval": 3600}) as gw, api(gw) as client:
        await asyncio.to_thread(_send, gw, "old")
        await _patch(client, {"smtp.chaos": {"rcpt": {"code": 452, "probability": 100}}})
        assert (await client.get("/chaos")).json()["rcpt"] == {"code": 452, "probability": 100}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asyncio.to_thread(_send, gw, "refused")
        assert refused.value.recipients["b@example.com"][0] == 452
        await _patch(client, {"smtp.chaos": None})
        await asyncio.to_thread(_send, gw, "new")
        # a tiny max age wakes the hourly purge now: the message older than it goes
        gw.inbox.clock = _Later(timedelta(days=1))
        await _patch(client, {"inbox.max_age_days": 0.5})
        async with asyncio.timeout(5):
            while await _subjects(client):  # noqa: ASYNC110 - the store changes, not an event
                await asyncio.sleep(0.05)


class _Later(SystemClock):
    """The system clock, ``ahead`` in the future."""

    def __init__(self, ahead: timedelta) -> None:
        self.ahead = ahead

    def now(self) -> Any:
        return super().now() + self.ahead


async def test_a_stored_value_this_version_cannot_use_is_skipped(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw:  # migrates the database
        store = RuntimeSettingsStore(gw.runtime.store.db)
        bad = {"retry.jitter": 7, "gone.setting": 1, "log_level": "LOUD"}
        await store.save({**bad, "retry.max_attempts": 4}, SystemClock().now())
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert gw.runtime.changed == {"retry.max_attempts": 4}
        assert gw.dispatcher.retry.max_attempts == 4
        assert gw.dispatcher.retry.jitter == 0.0  # the configured one
        assert (await client.get("/settings")).json()["changed"] == ["retry.max_attempts"]


async def test_another_process_picks_up_a_change(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "RUNTIME_REFRESH", 0.1)
    async with (
        start_gateway(Mode.DEV) as one,
        start_gateway(Mode.DEV) as two,
        api(one) as client,
    ):
        await _patch(client, {"retry.max_attempts": 3})
        async with asyncio.timeout(5):
            while two.dispatcher.retry.max_attempts != 3:  # noqa: ASYNC110 - polled, as it is
                await asyncio.sleep(0.05)
        assert two.runtime.changed == {"retry.max_attempts": 3}


async def test_boot_settings_are_shown_with_secrets_redacted_to_the_admin_only(
    start_gateway: GatewayFactory,
) -> None:
    relay = f"smtp://user:{RELAY_PASSWORD}@127.0.0.1:2525"
    async with start_gateway(api_token=TOKEN, relay_url=relay) as gw:
        async with api(gw, TOKEN) as client:
            response = await client.get("/settings")
            assert response.json()["boot"]["db_url"].startswith("sqlite:")
            assert response.status_code == 200
            assert response.json()["boot"]["relay_url"] == "**********"
            assert response.json()["boot"]["api_token"] == "**********"
            assert RELAY_PASSWORD not in response.text and TOKEN not in response.text
        _, tenant_token = await TokenStore(gw.accounts.db, SystemClock()).create("a", "t")
        async with api(gw, tenant_token) as tenant:
            assert (await tenant.get("/settings")).status_code == 403
            refused = await tenant.patch("/settings", json={"retry.max_attempts": 1})
            assert refused.status_code == 403
