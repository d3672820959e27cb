"""Several inboxes, read/unread, tags and search through ``/api/v1`` (issue 10), with
real SMTP clients sending to ``mailgate dev`` in-process."""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from mailgate.app import Gateway, Mode
from mailgate.settings import InboxLimits, InboxSettings
from tests.integration.conftest import GatewayFactory, api, sse_events

PER_USER = 12


def _address(gw: Gateway) -> tuple[str, int]:
    assert gw.smtp_address is not None
    return gw.smtp_address


def _message(subject: str, *, to: str = "dev@example.com", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "App <app@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(f"Body of {subject}")
    return msg


def _send(
    address: tuple[str, int],
    msg: EmailMessage,
    *,
    user: str | None = None,
    to_addrs: list[str] | None = None,
) -> None:
    """One SMTP session: EHLO, AUTH PLAIN as ``user`` (if given), one message, QUIT."""
    with smtplib.SMTP(*address, timeout=10) as client:
        client.ehlo()
        if user is not None:
            client.user, client.password = user, "secret"
            client.auth("PLAIN", client.auth_plain)
        client.send_message(msg, to_addrs=to_addrs)


async def _subjects(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/inbox", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return sorted(item["subject"] for item in response.json()["items"])


async def test_two_inboxes_by_auth_user_with_concurrent_senders(
    start_gateway: GatewayFactory,
) -> None:
    async with (
        start_gateway(Mode.DEV, inbox={"sort_by": "auth", "max_messages": 100}) as gw,
        api(gw) as client,
    ):
        jobs: list[tuple[str | None, EmailMessage]] = [
            (user, _message(f"{user}-{i}"))
            for i in range(PER_USER)
            for user in ("run-a", "run-b")  # interleaved
        ]
        jobs.append((None, _message("anonymous")))  # no AUTH: the default inbox

        def send_all() -> None:
            with ThreadPoolExecutor(max_workers=8) as pool:
                futures = [pool.submit(_send, _address(gw), m, user=u) for u, m in jobs]
                for future in futures:
                    future.result()  # a refused message fails the test here

        await asyncio.to_thread(send_all)

        assert (await client.get("/inboxes")).json() == {
            "inboxes": [
                {"name": "default", "total": 1, "unread": 1},
                {"name": "run-a", "total": PER_USER, "unread": PER_USER},
                {"name": "run-b", "total": PER_USER, "unread": PER_USER},
            ]
        }
        for user in ("run-a", "run-b"):  # each inbox sees only its own mail
            assert await _subjects(client, inbox=user) == sorted(
                f"{user}-{i}" for i in range(PER_USER)
            )
        [a_item] = (await client.get("/inbox", params={"inbox": "run-a", "limit": 1})).json()[
            "items"
        ]
        assert a_item["inbox"] == "run-a"
        # a message of one inbox is not reachable through another
        assert (
            await client.get(f"/inbox/{a_item['id']}", params={"inbox": "run-b"})
        ).status_code == 404
        assert (
            await client.delete(f"/inbox/{a_item['id']}", params={"inbox": "run-b"})
        ).status_code == 404
        # deleting one inbox never touches another
        assert (await client.delete("/inbox", params={"inbox": "run-a"})).json() == {
            "deleted": PER_USER
        }
        assert await _subjects(client, inbox="run-a") == []
        assert len(await _subjects(client, inbox="run-b")) == PER_USER
        assert await _subjects(client, inbox="default") == ["anonymous"]


async def test_sorting_by_header_and_by_domain_and_retention_per_inbox(
    start_gateway: GatewayFactory,
) -> None:
    async with (
        start_gateway(Mode.DEV, inbox={"sort_by": "header", "max_messages": 2}) as gw,
        api(gw) as client,
    ):
        for i in range(3):
            await asyncio.to_thread(
                _send, _address(gw), _message(f"qa-{i}", X_Mailgate_Inbox="team-qa")
            )
        await asyncio.to_thread(
            _send, _address(gw), _message("odd name", X_Mailgate_Inbox="ci@example.com")
        )
        # max_messages = 2 is per inbox: the third message to team-qa pushed out its first only
        assert await _subjects(client, inbox="team-qa") == ["qa-1", "qa-2"]
        assert await _subjects(client, inbox="ci_example.com") == ["odd name"]

    async with (
        start_gateway(Mode.DEV, inbox={"sort_by": "domain"}) as gw,
        api(gw) as client,
    ):
        await asyncio.to_thread(
            _send, _address(gw), _message("to acme"), to_addrs=["x@Acme.example", "y@other.example"]
        )
        assert await _subjects(client, inbox="acme.example") == ["to acme"]  # same store


async def test_named_inboxes_keep_their_own_limits_and_streams_hear_the_prunes(
    start_gateway: GatewayFactory,
) -> None:
    inbox = {
        "sort_by": "header",
        "max_messages": 10,
        "boxes": {"one": {"max_messages": 1}, "brief": {"max_age_days": 1 / 86_400}},
    }
    async with (
        start_gateway(Mode.DEV, inbox=inbox, retention={"interval": 0.2}) as gw,
        api(gw) as client,
        client.stream("GET", "/inbox/events", params={"inbox": "one"}) as one_stream,
        client.stream("GET", "/inbox/events", params={"inbox": "brief"}) as brief_stream,
    ):
        one_events, brief_events = _sse_events(one_stream), _sse_events(brief_stream)
        for subject, box in [("one-a", "one"), ("one-b", "one"), ("brief", "brief")]:
            await asyncio.to_thread(_send, _address(gw), _message(subject, X_Mailgate_Inbox=box))
        await asyncio.to_thread(_send, _address(gw), _message("stays"))
        # max_messages = 1 for "one": its second message pushed out the first, at once
        assert [await asyncio.wait_for(anext(one_events), 5) for _ in range(3)] == [
            ("new", "one-a"),
            ("new", "one-b"),
            ("prune", {"inbox": "one", "deleted": 1}),
        ]
        assert await _subjects(client, inbox="one") == ["one-b"]
        # "brief" keeps mail one second: the background retention deletes it
        assert await asyncio.wait_for(anext(brief_events), 5) == ("new", "brief")
        assert await asyncio.wait_for(anext(brief_events), 5) == (
            "prune",
            {"inbox": "brief", "deleted": 1},
        )
        assert await _subjects(client, inbox="brief") == []
        assert await _subjects(client, inbox="default") == ["stays"]  # 7 days, 10 messages


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """Each event of an SSE stream: its name and the subject of a new message, or the
    data of another event."""
    async for name, data in sse_events(response):
        body = json.loads(data)
        yield name, body["subject"] if name == "new" else body


def test_a_named_inbox_must_be_named_as_inboxes_are() -> None:
    with pytest.raises(ValidationError, match=re.escape("'ci@example.com'")):
        InboxSettings(boxes={"ci@example.com": InboxLimits(max_messages=1)})


async def test_read_unread_and_tags(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        msg = _message("tagged", to="QA <qa+smoke+eu@example.com>", X_Tags="release 2.0, Nightly")
        msg["Message-ID"] = "<tagged-1@example.com>"
        await asyncio.to_thread(
            _send,
            _address(gw),
            msg,
            to_addrs=["qa+smoke+eu@example.com", "audit+hidden@example.com"],
        )
        [item] = (await client.get("/inbox")).json()["items"]
        assert item["read"] is False
        assert item["tags"] == ["eu", "hidden", "Nightly", "release 2.0", "smoke"]
        assert item["message_id"] == "tagged-1@example.com"

        event = (await client.get(f"/inbox/{item['id']}")).json()  # opening it marks it read
        assert event["read"] is True and event["inbox"] == "default"
        assert (await client.get("/inboxes")).json()["inboxes"] == [
            {"name": "default", "total": 1, "unread": 0}
        ]
        assert await _subjects(client, q="is:read") == ["tagged"]

        put = await client.put(f"/inbox/{item['id']}", json={"read": False, "tags": ["x<y>", "ok"]})
        assert put.status_code == 200, put.text
        assert (put.json()["read"], put.json()["tags"]) == (False, ["ok", "x y"])
        assert await _subjects(client, q="is:unread tag:ok") == ["tagged"]
        assert await _subjects(client, q="tag:smoke") == []  # the tags were replaced
        only_read = await client.put(f"/inbox/{item['id']}", json={"read": True})
        assert only_read.json()["tags"] == ["ok", "x y"]  # left out: kept
        too_many = await client.put(
            f"/inbox/{item['id']}", json={"tags": [str(i) for i in range(33)]}
        )
        assert too_many.status_code == 422
        assert (await client.put("/inbox/nope", json={"read": True})).status_code == 404


async def test_search_through_the_api(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        welcome = _message("Welcome aboard", to="Jane <jane@example.com>")
        welcome["Bcc"] = "hidden@audit.example"  # smtplib sends it in the envelope only
        sends = [
            (welcome, None),
            (_message("Grüße aus Köln"), None),  # RFC 2047-encoded on the wire
            (_message("Your 50% discount"), None),
        ]
        for msg, to_addrs in sends:
            await asyncio.to_thread(_send, _address(gw), msg, to_addrs=to_addrs)
        [raw_subject] = [
            line
            for line in (
                await client.get(f"/inbox/{await _id(client, 'Köln')}/raw")
            ).text.splitlines()
            if line.startswith("Subject:")
        ]
        assert "=?utf-8?" in raw_subject  # encoded on the wire, decoded in the store

        assert await _subjects(client, q="welcome") == ["Welcome aboard"]  # a plain word
        assert await _subjects(client, q="to:hidden@audit.example") == ["Welcome aboard"]
        assert await _subjects(client, q="bcc:hidden") == ["Welcome aboard"]
        assert await _subjects(client, q="subject:köln") == ["Grüße aus Köln"]
        assert await _subjects(client, q='"body of your"') == ["Your 50% discount"]
        assert await _subjects(client, q="50%") == ["Your 50% discount"]
        assert await _subjects(client, q="-welcome -discount") == ["Grüße aus Köln"]
        assert await _subjects(client, q="from:app@example.com is:unread") == sorted(
            ["Welcome aboard", "Grüße aus Köln", "Your 50% discount"]
        )

        bad = await client.get("/inbox", params={"q": "before:someday"})
        assert bad.status_code == 422 and "cannot read the date" in bad.text
        for nothing in ("", "  ", '""'):  # an empty search variable never empties the inbox
            assert (await client.delete("/inbox", params={"q": nothing})).json() == {"deleted": 0}
        assert (await client.delete("/inbox", params={"q": "after:yesterday"})).status_code == 422
        assert (await client.delete("/inbox", params={"q": "subject:welcome"})).json() == {
            "deleted": 1
        }
        assert await _subjects(client) == ["Grüße aus Köln", "Your 50% discount"]


async def _id(client: httpx.AsyncClient, q: str) -> str:
    [item] = (await client.get("/inbox", params={"q": q})).json()["items"]
    return str(item["id"])
