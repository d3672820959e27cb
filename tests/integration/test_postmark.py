"""Postmark's answers mapped to outcomes, against the local contract server (real socket)."""

from __future__ import annotations

import asyncio
import base64
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from mailgate.crypto import generate_key
from mailgate.deliver.transport import Transport
from mailgate.deliver.transports import transport_for
from mailgate.model import Attachment, FailureClass, Outcome
from mailgate.settings import DeliverySettings
from tests.builders import make_message
from tests.contract.test_transports import outgoing, postmark_account, postmark_settings
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.postmark_peer import PostmarkPeer, Scripted


@pytest.fixture
async def peer() -> AsyncIterator[PostmarkPeer]:
    async with PostmarkPeer(token="right-token") as pm:
        yield pm


@pytest.fixture
async def postmark(peer: PostmarkPeer) -> AsyncIterator[Transport]:
    transport = transport_for(
        postmark_account("right-token"),
        settings=DeliverySettings(),
        local_hostname="gw",
        postmark=postmark_settings(peer.url),
    )
    yield transport
    await transport.aclose()


async def test_the_request_carries_the_token_and_the_fields(
    peer: PostmarkPeer, postmark: Transport
) -> None:
    message = make_message(
        sender="Shop <shop@example.com>",
        to=("Ann <a@example.com>",),
        cc=("c@example.com",),
        subject="Receipt",
        text="plain",
        html="<p>html</p>",
        reply_to="help@example.com",
        headers={"X-Order": "42"},
        attachments=(Attachment("r.pdf", "application/pdf", b"%PDF", cid="logo"),),
    )
    result = await postmark.send(outgoing(message))
    assert result.status is Outcome.SENT and result.remote_id, result
    [body] = peer.requests
    assert peer.headers[0]["x-postmark-server-token"] == "right-token"
    assert {k: body[k] for k in ("From", "To", "Cc", "Subject", "TextBody", "HtmlBody")} == {
        "From": "Shop <shop@example.com>",
        "To": "Ann <a@example.com>",
        "Cc": "c@example.com",
        "Subject": "Receipt",
        "TextBody": "plain",
        "HtmlBody": "<p>html</p>",
    }
    assert body["ReplyTo"] == "help@example.com" and body["MessageStream"] == "outbound"
    assert body["Headers"] == [{"Name": "X-Order", "Value": "42"}]
    [part] = body["Attachments"]
    assert base64.b64decode(part["Content"]) == b"%PDF"
    assert (part["Name"], part["ContentType"], part["ContentID"]) == (
        "r.pdf",
        "application/pdf",
        "cid:logo",
    )


async def test_a_wrong_token_is_an_account_problem(peer: PostmarkPeer) -> None:
    transport = transport_for(
        postmark_account("wrong-token"),
        settings=DeliverySettings(),
        local_hostname="gw",
        postmark=postmark_settings(peer.url),
    )
    result = await transport.send(outgoing(make_message()))
    await transport.aclose()
    assert result.status is Outcome.DEFERRED
    assert result.failure_class is FailureClass.AUTH and result.config_error
    assert "wrong-token" not in result.detail and peer.requests == []


@pytest.mark.parametrize(
    ("answer", "status", "cls", "config"),
    [
        (Scripted(422, {"ErrorCode": 300, "Message": "Invalid email request"}), "failed",
         FailureClass.INVALID_RECIPIENT, False),
        (Scripted(422, {"ErrorCode": 411, "Message": "Forbidden attachment type"}), "failed",
         FailureClass.CONTENT, False),
        (Scripted(422, {"ErrorCode": 400, "Message": "Sender signature not found"}),
         "deferred", FailureClass.AUTH, True),
        (Scripted(422, {"ErrorCode": 412, "Message": "Account is pending"}), "deferred",
         FailureClass.POLICY, True),
        (Scripted(500, {"ErrorCode": 0, "Message": "Internal error"}), "deferred",
         FailureClass.OTHER, False),
        (Scripted(503, {}), "deferred", FailureClass.OTHER, False),
    ],
)  # fmt: skip
async def test_postmark_answers_map_to_outcomes(
    peer: PostmarkPeer,
    postmark: Transport,
    answer: Scripted,
    status: str,
    cls: FailureClass,
    config: bool,
) -> None:
    peer.script.append(answer)
    result = await postmark.send(outgoing(make_message()))
    assert (result.status.value, result.failure_class, result.config_error) == (
        status,
        cls,
        config,
    )
    assert result.recipients["a@example.com"].status.value == status


async def test_429_is_throttled_and_honours_retry_after(
    peer: PostmarkPeer, postmark: Transport
) -> None:
    limited = {"ErrorCode": 429, "Message": "Rate limit exceeded"}
    peer.script.append(Scripted(429, limited, {"Retry-After": "17"}))
    result = await postmark.send(outgoing(make_message()))
    assert result.status is Outcome.DEFERRED and not result.config_error
    assert (result.failure_class, result.retry_after) == (FailureClass.THROTTLED, 17.0)


async def test_an_answer_dripped_byte_by_byte_times_out(
    peer: PostmarkPeer, postmark: Transport
) -> None:
    """httpx's timeout is per read: a body that kept coming, a byte now and then, held
    the send (and its message, leased and renewed) until the drip ended: never, here.
    The whole POST is bounded by the account's ``timeout`` (5 s)."""

    async def drip() -> AsyncIterator[bytes]:
        while True:
            yield b" "
            await asyncio.sleep(0.2)

    peer.script.append(Scripted(200, {}, stream=drip))
    async with asyncio.timeout(30):
        result = await postmark.send(outgoing(make_message()))
    assert (result.status, result.failure_class) == (Outcome.DEFERRED, FailureClass.TIMEOUT)
    assert result.detail == "no answer in 5 s"


async def test_a_huge_answer_is_not_held_in_memory(peer: PostmarkPeer, postmark: Transport) -> None:
    """A 64 MiB answer (a proxy's error page gone wrong) was read whole, twice over
    (bytes and text): only its first 64 KiB is read now."""
    chunk = b"x" * 65536

    async def huge() -> AsyncIterator[bytes]:
        for _ in range(1024):
            yield chunk

    peer.script.append(Scripted(500, {}, stream=huge))
    tracemalloc.start()
    try:
        result = await postmark.send(outgoing(make_message()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.status, result.failure_class) == (Outcome.DEFERRED, FailureClass.OTHER)
    assert result.detail == "Postmark 500: Internal Server Error"
    assert peak < 16 * 1024 * 1024


async def test_a_retry_after_past_any_date_gives_up_instead_of_crashing_the_attempt(
    start_gateway: GatewayFactory,
) -> None:
    """``429`` with ``Retry-After: 10**15`` (seconds): the backoff built a timedelta past
    its range, OverflowError ended the attempt before it was recorded, and the message
    stayed ``sending`` to be leased, sent and crashed again for ever, with no attempt
    shown. A wait longer than the message may live gives up, as a shorter one past
    ``max_age`` does."""
    async with PostmarkPeer("pm-token") as pm:
        settings = {"secret_key": generate_key(), "postmark": {"base_url": pm.url}}
        async with start_gateway(**settings) as gw, api(gw) as client:
            account = {"id": "pm", "transport": "postmark", "postmark_token": "pm-token"}
            assert (await client.post("/accounts", json=account)).status_code == 201
            assert (await client.post("/accounts/pm/test")).json()["ok"] is True
            assert (await client.post("/accounts/pm/enable")).status_code == 200
            limited = {"ErrorCode": 429, "Message": "Rate limit exceeded"}
            pm.script.append(Scripted(429, limited, {"Retry-After": str(10**15)}))
            message = {"from": "a@example.com", "to": "b@example.com", "subject": "s",
                       "text": "t", "account": "pm"}  # fmt: skip
            [mid] = (await client.post("/messages", json=message)).json()["ids"]
            body = await wait_for_state(client, mid, "failed", "deferred")
    assert body["state"] == "failed", body
    assert body["last_error"] == "expired after 1 attempts: Postmark 429: Rate limit exceeded"
    [attempt] = body["attempts"]
    assert (attempt["text"], attempt["failure_class"]) == (
        "Postmark 429: Rate limit exceeded",
        "throttled",
    )
