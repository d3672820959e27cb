"""Mailpit's WebSocket ``/mailpit/api/events`` (issue 10) against a real gateway: mail
sent with smtplib over the SMTP port, changes made through the Mailpit API with httpx,
frames read with the ``websockets`` client as Mailpit's web UI reads them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from mailgate import __version__
from mailgate.app import Gateway, Mode
from mailgate.clock import SystemClock
from mailgate.inbox.events import EventKind, InboxEvent
from mailgate.store import TokenStore
from mailgate.web import mailpit_events
from tests.integration.conftest import GatewayFactory, send_raw, threads_of
from tests.integration.test_capture_handlers import CLEAN_SUBJECT, send_unclean
from tests.integration.test_mailpit_api import mailpit, plain, rich_message, send

TOKEN = "s3cret-token-for-tests"


@asynccontextmanager
async def events(gw: Gateway, base: str = "/mailpit", **kw: Any) -> AsyncIterator[ClientConnection]:
    url = gw.http_url.replace("http://", "ws://", 1) + f"{base}/api/events"
    async with connect(url, open_timeout=10, **kw) as ws:
        yield ws


async def frame(ws: ClientConnection, *, skip_stats: bool = True) -> dict[str, Any]:
    """The next frame (``stats`` passed over unless asked for)."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert set(message) == {"Type", "Data"}
        if not (skip_stats and message["Type"] == "stats"):
            return message


async def test_new_is_the_list_summary_then_stats(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp, events(gw) as ws:
        await send(gw, rich_message())
        new = await frame(ws, skip_stats=False)
        assert new["Type"] == "new"
        [listed] = (await mp.get("/api/v1/messages")).json()["messages"]
        assert new["Data"] == listed
        assert new["Data"]["Subject"] == "Your receipt" and new["Data"]["Read"] is False
        stats = await frame(ws, skip_stats=False)
        assert stats == {
            "Type": "stats", "Data": {"Total": 1, "Unread": 1, "Version": __version__}
        }  # fmt: skip


async def test_a_big_message_s_summary_is_made_off_the_event_loop(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new message's summary reads its HTML and addresses (40,000 Cc held the loop): a
    big message's is made in a worker thread, a small one's on the loop (cheaper than the
    hand-off, for the many small events of a busy capture server)."""
    made = threads_of(monkeypatch, mailpit_events, "mailpit_messages")
    cc = ",\r\n ".join(f"u{n}@example.com" for n in range(5_000))
    big = f"From: a@example.com\r\nSubject: big\r\nCc: {cc}\r\n\r\nhi\r\n".encode()
    async with start_gateway(Mode.DEV) as gw, events(gw) as ws:
        await send_raw(gw, b"From: a@example.com\r\nSubject: small\r\n\r\nhi\r\n")
        assert (await frame(ws))["Data"]["Subject"] == "small"
        await send_raw(gw, big)
        assert (await frame(ws))["Data"]["Subject"] == "big"
    assert made == ["loop", "worker"]


async def test_read_tags_delete_and_truncate(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp, events(gw) as ws:
        for subject in ("one", "two"):
            await send(gw, plain(subject))
        first, second = [(await frame(ws))["Data"]["ID"] for _ in range(2)]

        await mp.put("/api/v1/messages", json={"IDs": [first], "Read": True})
        assert await frame(ws) == {"Type": "update", "Data": {"ID": first, "Read": True}}
        await mp.put("/api/v1/messages", json={"IDs": [first], "Read": False})
        assert await frame(ws) == {"Type": "update", "Data": {"ID": first, "Read": False}}
        await mp.get(f"/api/v1/message/{second}")  # opening a message marks it read
        assert await frame(ws) == {"Type": "update", "Data": {"ID": second, "Read": True}}
        await mp.put("/api/v1/tags", json={"IDs": [second], "Tags": ["urgent", "Billing"]})
        tagged = await frame(ws)
        assert tagged == {"Type": "update", "Data": {"ID": second, "Tags": ["Billing", "urgent"]}}

        stats = await frame(ws, skip_stats=False)
        while stats["Type"] != "stats":
            stats = await frame(ws, skip_stats=False)
        assert stats["Data"]["Total"] == 2 and stats["Data"]["Unread"] == 1

        await mp.request("DELETE", "/api/v1/messages", json={"IDs": [first]})
        assert await frame(ws) == {"Type": "delete", "Data": {"ID": first}}
        await mp.delete("/api/v1/messages")
        assert await frame(ws) == {"Type": "truncate", "Data": None}
        await send(gw, plain("three"))
        await mp.delete("/api/v1/search", params={"query": "subject:three"})
        assert (await frame(ws))["Type"] == "new"
        # a search took some mail: not everything is gone, the UI reads the list again
        assert await frame(ws) == {"Type": "prune", "Data": None}


async def test_per_inbox_socket_hears_its_inbox_only(start_gateway: GatewayFactory) -> None:
    async with (
        start_gateway(Mode.DEV, inbox={"sort_by": "auth"}) as gw,
        events(gw, "/mailpit/run-a") as a,
        events(gw, "/mailpit/run-b") as b_events,
        events(gw) as everything,
        mailpit(gw, "/mailpit/run-b") as b,
    ):
        await send(gw, plain("for b"), user="run-b")
        await send(gw, plain("for a"), user="run-a")
        new = await frame(a)
        assert new["Type"] == "new" and new["Data"]["Subject"] == "for a"
        heard = [(await frame(everything))["Data"]["Subject"] for _ in range(2)]
        assert heard == ["for b", "for a"]
        stats = await frame(a, skip_stats=False)
        assert stats["Type"] == "stats" and stats["Data"]["Total"] == 1

        # b's changes are not a's: emptying b truncates nothing a can see
        await b.delete("/api/v1/messages")
        sent = await b.post(
            "/api/v1/send", json={"From": {"Email": "x@example.com"}, "To": [{"Email": "y@ex.com"}]}
        )
        assert await frame(everything) == {"Type": "prune", "Data": None}
        assert (await frame(everything))["Data"]["ID"] == sent.json()["ID"]
        assert (await frame(b_events))["Data"]["Subject"] == "for b"
        assert await frame(b_events) == {"Type": "truncate", "Data": None}
        assert (await frame(b_events))["Data"]["ID"] == sent.json()["ID"]  # sent through b
        await send(gw, plain("for a again"), user="run-a")
        assert (await frame(a))["Data"]["Subject"] == "for a again"


async def test_tenant_hears_its_own_mail_only(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV, api_token=TOKEN) as gw:
        _, acme_token = await TokenStore(gw.accounts.db, SystemClock()).create("acme", "t")
        async with (
            events(gw, additional_headers={"X-API-Token": acme_token}) as acme,
            mailpit(gw) as mp,
        ):
            await send(gw, plain("for the default tenant"))
            sent = await mp.post(
                "/api/v1/send",
                json={"From": {"Email": "x@acme.test"}, "To": [{"Email": "y@acme.test"}]},
                headers={"X-API-Token": acme_token},
            )
            new = await frame(acme)
            assert new["Type"] == "new" and new["Data"]["ID"] == sent.json()["ID"]


async def test_handshake_authenticated_as_the_api(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV, api_token=TOKEN) as gw:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as refused:
                async with events(gw, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
        basic = gw.http_url.replace("http://", f"ws://mailpit:{TOKEN}@", 1)
        async with connect(f"{basic}/mailpit/api/events", open_timeout=10) as ws:
            await send(gw, plain("with basic"))
            assert (await frame(ws))["Data"]["Subject"] == "with basic"
        async with events(gw, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await send(gw, plain("with bearer"))
            assert (await frame(ws))["Data"]["Subject"] == "with bearer"


async def test_cross_origin_page_refused(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw:
        with pytest.raises(InvalidStatus) as refused:
            async with events(gw, origin=Origin("http://evil.example")):
                pass
        assert refused.value.response.status_code == 403
        own = gw.http_url
        async with events(gw, origin=Origin(own)) as ws:
            await send(gw, plain("same origin"))
            assert (await frame(ws))["Data"]["Subject"] == "same origin"


async def test_reader_that_falls_behind_is_closed(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, events(gw) as ws:
        gw.inbox.events.queue_limit = 2  # subscriptions made from now on
        async with events(gw) as slow:
            for _ in range(3):  # in one go: the relay cannot take one before the next
                gw.inbox.events.publish(InboxEvent(EventKind.UPDATE, "default", read=True))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await frame(slow)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            await send(gw, plain("still heard"))  # the reader that kept up goes on
            assert (await frame(ws))["Data"]["Subject"] == "still heard"


async def test_new_carries_the_text_the_store_keeps(start_gateway: GatewayFactory) -> None:
    """A Subject decoding to a lone surrogate went into the frame as it was: the
    frames are encoded without ``ensure_ascii``, so encoding failed and the WebSocket
    dropped with an ASGI exception; a NUL went out where the API shows U+FFFD."""
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp, events(gw) as ws:
        assert gw.smtp_address is not None
        assert (await asyncio.to_thread(send_unclean, gw.smtp_address)).startswith(b"250 ")
        new = await frame(ws)
        assert new["Type"] == "new" and new["Data"]["Subject"] == CLEAN_SUBJECT
        message = (await mp.get(f"/api/v1/message/{new['Data']['ID']}")).json()
        assert message["Subject"] == CLEAN_SUBJECT
