"""POST /api/v1/messages with hostile items: each bad item is one rejection with a reason,
the good ones in the same batch are still queued, and nothing answers 500."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.ingest.submission import Submissions
from mailgate.settings import LimitSettings
from mailgate.store import Database, QueueStore
from tests.integration.conftest import GatewayFactory, api, engine_url, fast_settings


def item(**kw: Any) -> dict[str, Any]:
    return {"to": "a@example.com", "subject": "Hi", "text": "body", **kw}


def nested(levels: int) -> str:
    """JSON text of ``levels`` nested objects (built as text: no recursion on our side)."""
    return '{"k":' * levels + "1" + "}" * levels


async def post_raw(client: httpx.AsyncClient, body: str) -> httpx.Response:
    return await client.post(
        "/messages", content=body.encode(), headers={"Content-Type": "application/json"}
    )


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_batch_size_limit_rejects_every_item_and_queues_none(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'q.sqlite3'}")
    await db.migrate()
    queue = QueueStore(db)
    woken: list[None] = []
    submissions = Submissions(
        queue,
        FixedClock(),
        default_from="app@example.com",
        limits=LimitSettings(max_batch=2),
        on_queued=lambda: woken.append(None),
    )
    try:
        report = await submissions.submit([item(id=f"k{i}") for i in range(3)])
        assert report.ids == [] and woken == []
        assert [(r.index, r.id) for r in report.rejected] == [(0, "k0"), (1, "k1"), (2, "k2")]
        assert {r.reason for r in report.rejected} == {"batch of 3 messages is over the limit of 2"}
        assert (await queue.list("default"))[0] == []
        assert len((await submissions.submit([item(), item()])).ids) == 2
    finally:
        await db.aclose()


async def test_batch_size_limit_through_the_api(start_gateway: GatewayFactory) -> None:
    async with start_gateway(limits={"max_batch": 2}) as gw, api(gw) as client:
        response = await client.post("/messages", json=[item(), item(), item()])
        assert response.status_code == 422
        assert "over the limit of 2" in response.json()["rejected"][0]["reason"]
        assert (await client.get("/messages")).json()["items"] == []


async def test_an_inline_attachment_over_the_attachment_limit_is_refused(
    start_gateway: GatewayFactory,
) -> None:
    """``attachments.max_attachment_size`` holds for attachments given inline, not only
    for those fetched by url or read from a path when the message is sent."""

    def attached(size: int) -> dict[str, object]:
        content = base64.b64encode(b"x" * size).decode()
        files = [
            {"filename": "a.bin", "content_type": "application/octet-stream", "content": content}
        ]
        return item(attachments=files)

    async with start_gateway(attachments={"max_attachment_size": 1000}) as gw, api(gw) as client:
        response = await client.post("/messages", json=[attached(1000), attached(1001)])
        body = response.json()
        assert response.status_code == 202 and body["queued"] == 1, body
        [rejected] = body["rejected"]
        assert rejected["index"] == 1
        assert rejected["reason"] == (
            "attachments.0: 1001 bytes is over the attachment limit of 1000 bytes"
            " (attachments.max_attachment_size)"
        )


async def test_one_bad_item_is_one_rejection_the_rest_are_queued(
    start_gateway: GatewayFactory,
) -> None:
    """NUL and lone surrogates in a body (issue 5 item 10), a megabyte subject (item 2),
    a line separator in a subject (item 4): rejected items, never a 500 for the batch."""
    bad = [
        item(text="nul \x00 here"),
        item(html="<p>\ud800</p>"),
        item(subject="x" * 1_048_576),
        item(subject="a\u2028b"),
        item(attachments=[{"filename": "a.txt", "content_type": "text/plain\r\nX: y"}]),
    ]
    batch = [item(id="first"), *bad, item(id="last")]
    async with start_gateway() as gw, api(gw) as client:
        response = await post_raw(client, json.dumps(batch))
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["queued"] == 2
        assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4, 5]
        reasons = [r["reason"] for r in body["rejected"]]
        assert reasons[0] == "text: NUL is not allowed in a body"
        assert reasons[1].startswith("html: U+D800 at position 3 is a lone surrogate")
        assert reasons[2] == "subject: 1048576 characters, over the limit of 998"
        assert reasons[3].startswith("subject: control character U+2028")
        assert reasons[4].startswith("attachments.0.content_type: ")
        listed = (await client.get("/messages")).json()["items"]
        assert sorted(m["key"] for m in listed) == ["first", "last"]


async def test_an_address_list_in_one_entry_queues_every_recipient(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, api(gw) as client:
        response = await client.post("/messages", json=item(to=["a@example.com, b@example.com"]))
        [mid] = response.json()["ids"]
        message = (await client.get(f"/messages/{mid}")).json()
        assert message["to"] == ["a@example.com", "b@example.com"]


async def test_deep_metadata_is_a_rejected_item_and_the_listing_still_reads(
    start_gateway: GatewayFactory,
) -> None:
    """255 levels: a rejected item with its reason. 5,000 levels is deeper than a JSON
    parser will go; the request is refused as a whole, but never with a 500."""
    async with start_gateway() as gw, api(gw) as client:
        ok = await client.post("/messages", json=item(id="good"))
        [good_id] = ok.json()["ids"]
        shallow = await post_raw(
            client, f'[{{"to":"a@example.com","subject":"s","text":"t","metadata":{nested(255)}}}]'
        )
        assert shallow.status_code == 422
        [rejected] = shallow.json()["rejected"]
        assert "nested deeper than the limit of 8" in rejected["reason"]
        deep = await post_raw(
            client, f'{{"to":"a@example.com","subject":"s","text":"t","metadata":{nested(5000)}}}'
        )
        assert deep.status_code in (400, 413, 422), deep.text
        assert (await client.get("/messages")).status_code == 200
        assert (await client.get(f"/messages/{good_id}")).status_code == 200


async def test_an_unprintable_id_is_not_echoed_back(start_gateway: GatewayFactory) -> None:
    """A rejected item's own id is echoed in ``rejected``, unless it cannot be encoded."""
    async with start_gateway() as gw, api(gw) as client:
        response = await post_raw(client, json.dumps([item(id="\ud800"), item(id="ok")]))
        assert response.status_code == 202, response.text
        [rejected] = response.json()["rejected"]
        assert rejected["id"] is None and rejected["reason"].startswith("id: ")


async def test_items_are_parsed_off_the_event_loop(tmp_path: Path) -> None:
    """Parsing a batch is CPU work (issue 5 item 2): it runs in a worker thread."""
    db = Database(f"sqlite:///{tmp_path / 'q.sqlite3'}")
    await db.migrate()
    submissions = Submissions(
        QueueStore(db),
        FixedClock(),
        default_from="app@example.com",
        limits=LimitSettings(),
        on_queued=lambda: None,
    )
    parse = submissions._parse
    threads: list[int] = []

    def recording(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return parse(*args)

    submissions._parse = recording  # type: ignore[method-assign,assignment]
    try:
        assert len((await submissions.submit([item(), item()])).ids) == 2
    finally:
        await db.aclose()
    assert len(threads) == 2 and threading.get_ident() not in threads


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, db_url: str) -> str:
    return await engine_url(request, db_url, "mailgate_submission_api")


async def test_fields_the_store_or_the_clock_cannot_hold_are_rejected_items(
    store_url: str,
) -> None:
    """An account name longer than the store's column (64, a VARCHAR on PostgreSQL) and a
    send_at whose UTC is outside the years 1-9999 were taken as valid: the insert of the
    whole batch, or the batch's parsing, then failed with a 500, the good items with it."""
    bad = [
        item(account="a" * 65),
        item(send_at="0001-01-01T00:00:00+14:00"),
        item(send_at="9999-12-31T23:59:59-14:00"),
    ]
    batch = [item(id="first"), *bad, item(id="last", account="b" * 64)]
    async with Gateway(fast_settings(store_url), mode=Mode.SERVE) as gw, api(gw) as client:
        response = await post_raw(client, json.dumps(batch))
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["queued"] == 2
        assert [r["index"] for r in body["rejected"]] == [1, 2, 3]
        reasons = [r["reason"] for r in body["rejected"]]
        assert reasons[0].startswith("account: "), reasons[0]
        assert reasons[1].startswith("send_at: "), reasons[1]
        assert reasons[2].startswith("send_at: "), reasons[2]
        listed = (await client.get("/messages")).json()["items"]
        assert sorted(m["key"] for m in listed) == ["first", "last"]


async def test_an_attachment_typed_multipart_is_a_rejected_item(
    start_gateway: GatewayFactory,
) -> None:
    """A multipart type needs a boundary and parts of its own (RFC 2046 §5.1.1): an
    attachment submitted as one was queued, then built as a multipart entity with no
    boundary whose base64 body no reader could find (the captured part was empty)."""
    content = base64.b64encode(b"hello").decode()
    bad = [
        item(attachments=[{"filename": "a.bin", "content_type": t, "content": content}])
        for t in ("multipart/mixed", "MULTIPART/related")
    ]
    async with start_gateway() as gw, api(gw) as client:
        response = await post_raw(client, json.dumps([item(id="good"), *bad]))
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["queued"] == 1
        assert [r["index"] for r in body["rejected"]] == [1, 2]
        for rejected in body["rejected"]:
            assert rejected["reason"].startswith("attachments.0.content_type: "), rejected
            assert "multipart" in rejected["reason"]


async def test_addresses_that_break_the_stdlib_parser_are_rejected_items(
    start_gateway: GatewayFactory,
) -> None:
    """The email package's address parser raises AttributeError, TypeError or
    UnboundLocalError on some malformed lists, not HeaderParseError: such a ``from`` or
    ``to`` failed the whole batch with a 500."""
    bad = [item(**{"from": v}) for v in ('x@["', "],.aIPv6:", "x, .@")] + [item(to='a@["')]
    async with start_gateway() as gw, api(gw) as client:
        response = await post_raw(client, json.dumps([item(id="good"), *bad]))
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["queued"] == 1
        assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4]
