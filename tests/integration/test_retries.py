"""Classification, retries and giving up, against a real upstream scripted to refuse.

Each attempt records its class; 4xx and dropped lines defer with backoff (never
sooner than the server asked), 5xx fails that recipient at once, a refused login is
the account's problem (waits, spends no attempt), and retries end as ``expired``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.integration.conftest import GatewayFactory, api, wait_for_message, wait_for_state
from tests.peers import Upstream


async def _submit(client: httpx.AsyncClient, **kw: Any) -> str:
    body = {"from": "shop@example.com", "to": "a@example.com", "subject": "Hi", "text": "t", **kw}
    response = await client.post("/messages", json=body)
    assert response.status_code == 202, response.text
    mid: str = response.json()["ids"][0]
    return mid


def _at(attempt: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(attempt["at"])


async def test_try_again_in_2_seconds_is_honoured(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """451 "try again in 2 seconds": the next attempt comes no sooner (backoff is 0.2 s)."""
    upstream.data_replies.append("451 Try again in 2 seconds")
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        mid = await _submit(client)
        body = await wait_for_state(client, mid, "sent", limit=15)
    first, second = body["attempts"]
    assert first["code"] == 451 and first["failure_class"] == "other" and first["counted"]
    assert (_at(second) - _at(first)).total_seconds() >= 2.0
    assert second["failure_class"] is None and first["account"] == "default"


async def test_a_slow_down_reply_slows_the_account_without_spending_attempts(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """4.7.1 is ``throttled``: the pacer halves the account's rate, and the retry waits
    for the account's pace (released, not tried) with the reason shown."""
    upstream.data_replies.append("451 4.7.1 Too many messages, slow down")
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        mid = await _submit(client)
        body = await wait_for_message(client, mid, lambda b: b["wait_reason"] is not None)
    assert body["wait_reason"] == "rate limit of account 'default'"
    assert body["state"] == "deferred" and len(body["attempts"]) == 1
    assert body["attempts"][0]["failure_class"] == "throttled"


async def test_mailbox_full_is_deferred_then_sent(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.rcpt_replies["a@example.com"] = "452 4.2.2 Mailbox full"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        mid = await _submit(client)
        body = await wait_for_state(client, mid, "deferred")
        assert body["attempts"][0]["failure_class"] == "mailbox_full"
        del upstream.rcpt_replies["a@example.com"]
        body = await wait_for_state(client, mid, "sent")
    assert len(upstream.received) == 1


async def test_no_such_user_fails_that_recipient_and_the_others_get_it(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        both = await _submit(client, to=["a@example.com", "nobody@example.com"])
        alone = await _submit(client, to="nobody@example.com")
        partial = await wait_for_state(client, both, "sent")
        failed = await wait_for_state(client, alone, "failed")
    [attempt] = partial["attempts"]
    assert attempt["recipients"]["nobody@example.com"]["status"] == "failed"
    assert attempt["failure_class"] == "invalid_recipient"
    assert failed["attempts"][0]["failure_class"] == "invalid_recipient"
    assert len(failed["attempts"]) == 1  # at once: no retry
    assert [r.rcpt_tos for r in upstream.received] == [["a@example.com"]]


async def test_a_line_dropped_during_data_defers_as_network(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.drop_at = "DATA"
    async with start_gateway(relay_url=upstream.url) as gw, api(gw) as client:
        mid = await _submit(client)
        body = await wait_for_state(client, mid, "deferred")
        assert body["attempts"][0]["failure_class"] == "network"
        assert body["attempts"][0]["counted"]
        upstream.drop_at = None
        await wait_for_state(client, mid, "sent")


async def test_a_refused_login_waits_uncounted_and_goes_once_the_password_is_fixed(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """535 is the account's problem: the message waits with the reason shown, spends no
    attempt (even past max_attempts), and goes after the password is fixed (no retry)."""
    upstream.credentials = {"user": "old-password"}
    relay = upstream.url.replace("smtp://", "smtp://user:new-password@") + "?auth_plaintext=true"
    retry = {"max_attempts": 2}
    async with start_gateway(relay_url=relay, retry=retry) as gw, api(gw) as client:
        mid = await _submit(client)
        body = await wait_for_message(client, mid, lambda b: len(b["attempts"]) >= 3)
        assert body["state"] == "deferred"
        assert body["wait_reason"].startswith("account 'default': 535 5.7.8")
        assert {a["failure_class"] for a in body["attempts"]} == {"auth"}
        assert not any(a["counted"] for a in body["attempts"])
        upstream.credentials["user"] = "new-password"  # the password is fixed
        body = await wait_for_state(client, mid, "sent")
    assert body["wait_reason"] is None and upstream.logins == ["user"]


async def test_retries_give_up_as_expired_with_the_last_reply(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.rcpt_replies["a@example.com"] = "450 4.3.0 Temporary local problem"
    retry = {"max_attempts": 3}
    async with start_gateway(relay_url=upstream.url, retry=retry) as gw, api(gw) as client:
        mid = await _submit(client)
        body = await wait_for_state(client, mid, "failed")
    assert len(body["attempts"]) == 3
    assert body["last_error"] == "expired after 3 attempts: 4.3.0 Temporary local problem"
