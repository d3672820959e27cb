"""An upstream whose replies are out of step with our commands: never "sent".

aiosmtplib raises when a command gets another reply than the one it waits for
(``354`` to DATA, ``250`` to MAIL, ``250``/``251`` to RCPT). A 2yz or 3yz there is no
refusal: the server answered a command twice, or a reply was left over on a reused
connection, and each reply after it belongs to the command before. Taking such a
reply as "sent" loses the message; it must be retried, on a new connection.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import GatewayFactory, api, wait_for_message, wait_for_state
from tests.integration.test_delivery_hardening import submit
from tests.peers import Upstream


def _retried(body: dict[str, Any]) -> bool:
    return len(body["attempts"]) >= 2


@pytest.mark.parametrize(
    ("stage", "reply"),
    [("mail", "354 3.0.0 go ahead"), ("rcpt", "252 2.1.5 cannot verify, will try"),
     ("data", "250 2.0.0 OK")],
)  # fmt: skip
async def test_a_reply_out_of_place_defers_the_message(
    start_gateway: GatewayFactory, stage: str, reply: str
) -> None:
    """A 2yz/3yz where another reply was due was recorded as ``sent`` with nothing sent
    (a 250 to the DATA command itself: the content never went)."""
    async with Upstream() as up:
        if stage == "mail":
            up.mail_reply = reply
        elif stage == "rcpt":
            up.rcpt_replies["a@example.com"] = reply
        else:
            up.data_command_reply = reply
        async with start_gateway(relay_url=up.url) as gw, api(gw) as client:
            mid = await submit(client)
            body = await wait_for_message(client, mid, _retried)
            assert body["state"] in ("deferred", "sending"), body
            first = body["attempts"][0]
            assert first["code"] == int(reply[:3])
            assert first["failure_class"] == "protocol"
            assert first["recipients"]["a@example.com"]["status"] == "deferred"
            assert up.received == []

            up.mail_reply = up.data_command_reply = None  # the server mends its ways
            up.rcpt_replies.clear()
            body = await wait_for_state(client, mid, "sent")
        assert [r.rcpt_tos for r in up.received] == [["a@example.com"]]


async def test_a_reply_left_over_on_a_pooled_connection_is_not_read_as_the_next(
    start_gateway: GatewayFactory,
) -> None:
    """The server answered the first message's content twice, in one write. The second
    reply stayed in aiosmtplib's buffer; the next message on that pooled connection read
    it as its MAIL's reply, and each reply after that one command late: its DATA command
    got its RCPT's 250, which was taken as sent. Nothing was sent. Such a connection is
    closed instead of reused."""
    async with Upstream() as up:
        up.data_replies.append("250 2.0.0 OK: queued\r\n250 2.0.0 OK: queued again")
        async with start_gateway(relay_url=up.url) as gw, api(gw) as client:
            first = await submit(client, subject="first")
            await wait_for_state(client, first, "sent")
            second = await submit(client, subject="second")
            body = await wait_for_state(client, second, "sent", "failed")
        assert [a["code"] for a in body["attempts"]] == [250], body["attempts"]
        assert [r.message["Subject"] for r in up.received] == ["first", "second"]
        assert up.connections == 2
