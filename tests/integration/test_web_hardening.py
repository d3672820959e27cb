"""The web layer against hostile and careless clients, on a real uvicorn server.

Body limit (413 while streaming), attachment downloads, read endpoints that no
stored row can break, the Host check, ``Allow`` on 405/OPTIONS, the documented
shapes of POST /messages' errors, and ``/docs`` without a CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from mailgate.app import Gateway, Mode
from mailgate.store.schema import inbox, messages
from tests.integration.conftest import (
    GatewayFactory,
    api,
    engine_url,
    fast_settings,
)

LIMIT = 64 * 1024
CHUNK = 64 * 1024
CHUNKS = 1024  # 64 MiB offered; the server must stop reading long before
JSON = {"Content-Type": "application/json"}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"a": value}
    return value


# --- request body limit (issue 5, item 6) -------------------------------------------


async def test_declared_content_length_over_the_limit_is_413_at_once(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(limits={"max_request_body": LIMIT}) as gw, api(gw) as client:
        response = await client.post(
            "/messages",
            content=b"[" + b" " * (LIMIT + 10) + b"]",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json() == {"detail": f"request body is over the limit of {LIMIT} bytes"}
        assert (await client.get("/messages")).status_code == 200


async def test_chunked_body_over_the_limit_is_413(start_gateway: GatewayFactory) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(8):
            sent += 1
            yield b" " * (LIMIT // 2)

    async with start_gateway(limits={"max_request_body": LIMIT}) as gw, api(gw) as client:
        response = await client.post("/messages", content=body(), headers=JSON)
        assert "content-length" not in response.request.headers  # chunked
        assert response.status_code == 413
        assert response.json() == {"detail": f"request body is over the limit of {LIMIT} bytes"}
        assert (await client.get("/messages")).status_code == 200


async def test_huge_chunked_body_is_not_read_to_the_end(start_gateway: GatewayFactory) -> None:
    """64 MiB offered: the server stops reading (nothing is buffered), answers 413."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b" " * CHUNK
        for _ in range(CHUNKS):
            sent += 1
            yield chunk

    async with start_gateway(limits={"max_request_body": LIMIT}) as gw, api(gw) as client:
        # httpx reads the answer only once it has written the whole body, so the
        # connection is cut under it: what matters is that it could not send it all.
        with contextlib.suppress(httpx.TransportError):
            response = await client.post("/messages", content=body(), headers=JSON)
            assert response.status_code == 413
        assert sent < CHUNKS // 4
        # A client that reads while it writes (curl, browsers) gets the 413.
        head, written = await _post_raw(gw, b"Transfer-Encoding: chunked", _chunks())
        assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
        assert written < CHUNKS * CHUNK // 4
        assert (await client.get("/messages")).status_code == 200


async def test_declared_length_is_refused_before_any_body_arrives(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(limits={"max_request_body": LIMIT}) as gw:
        head, written = await _post_raw(gw, b"Content-Length: 209715200", _nothing())
        assert head.startswith(b"HTTP/1.1 413 ") and written == 0


def _chunks() -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield b"%x\r\n" % CHUNK + b" " * CHUNK + b"\r\n"


def _nothing() -> Iterator[bytes]:
    yield from ()


async def _post_raw(gw: Gateway, framing: bytes, body: Iterator[bytes]) -> tuple[bytes, int]:
    """POST while reading: the response head, and how many body bytes were written."""
    assert gw.http_address is not None
    reader, writer = await asyncio.open_connection(*gw.http_address)
    writer.write(
        b"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n" + framing + b"\r\n\r\n"
    )
    head = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    written = 0
    try:
        for chunk in body:
            if head.done():
                break
            writer.write(chunk)
            await writer.drain()
            written += len(chunk)
    except ConnectionError:
        pass
    try:
        async with asyncio.timeout(10):
            return await head, written
    finally:
        writer.close()


async def test_effective_limit_is_batch_times_message_size(start_gateway: GatewayFactory) -> None:
    limits = {"max_request_body": 10**9, "max_batch": 2, "max_message_size": 20_000}
    async with start_gateway(limits=limits) as gw, api(gw) as client:
        response = await client.post(
            "/messages",
            content=b"[" + b" " * 40_001 + b"]",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert "40000 bytes" in response.json()["detail"]


async def test_body_under_the_limit_is_served(start_gateway: GatewayFactory) -> None:
    async with (
        start_gateway(limits={"max_request_body": LIMIT}, delivery={"enabled": False}) as gw,
        api(gw) as client,
    ):
        item = {"to": "a@example.com", "subject": "s", "text": "x" * (LIMIT // 2)}
        assert (await client.post("/messages", json=item)).status_code == 202


# --- attachment downloads (item 8, item 13's ../../etc/passwd) ------------------------


def _send_raw(gw: Gateway, raw: bytes) -> None:
    assert gw.smtp_address is not None
    host, port = gw.smtp_address
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], raw)


def _mime(part_headers: str, payload: str) -> bytes:
    return (
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: att\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        f"--B\r\n{part_headers}\r\n\r\n{payload}\r\n--B--\r\n"
    ).encode()


async def _download(
    start_gateway: GatewayFactory, part_headers: str, payload: str
) -> httpx.Response:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_send_raw, gw, _mime(part_headers, payload))
        [item] = (await client.get("/inbox")).json()["items"]
        return await client.get(f"/inbox/{item['id']}/attachments/0")


def _assert_download(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment; ")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"


async def test_crlf_in_an_rfc2231_filename_is_stripped(start_gateway: GatewayFactory) -> None:
    response = await _download(
        start_gateway,
        "Content-Type: text/plain\r\n"
        "Content-Disposition: attachment; filename*=utf-8''evil%0D%0AX-Injected:%20yes.txt",
        "hello",
    )
    _assert_download(response)
    assert "x-injected" not in response.headers
    # The parser may or may not keep ": yes.txt"; the CR/LF must go either way.
    assert re.fullmatch(
        r"attachment; filename=\"evilX-Injected[^\"]*\"; filename\*=UTF-8''evilX-Injected\S*",
        response.headers["content-disposition"],
    )
    assert response.content == b"hello"


async def test_html_attachment_without_a_name_is_a_sandboxed_download(
    start_gateway: GatewayFactory,
) -> None:
    script = "<script>fetch('/api/v1/inbox', {method: 'DELETE'})</script>"
    response = await _download(
        start_gateway, "Content-Type: text/html\r\nContent-Disposition: attachment", script
    )
    _assert_download(response)
    assert response.headers["content-type"] == "text/html"
    assert 'filename="attachment-0.html"' in response.headers["content-disposition"]
    assert response.content == script.encode()


async def test_path_in_a_filename_is_reduced_to_its_base_name(
    start_gateway: GatewayFactory,
) -> None:
    response = await _download(
        start_gateway,
        "Content-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="../../etc/passwd"\r\n'
        "Content-Transfer-Encoding: base64",
        "AAEC/w==",
    )
    _assert_download(response)
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"
    )
    assert response.content == b"\x00\x01\x02\xff"


async def test_non_ascii_filename_goes_out_as_rfc8187(start_gateway: GatewayFactory) -> None:
    response = await _download(
        start_gateway,
        "Content-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=utf-8''Gr%C3%BC%C3%9Fe%20%22x%22.pdf",
        "%PDF",
    )
    _assert_download(response)
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Grue _x_.pdf\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22x%22.pdf"
    )
    assert response.content == b"%PDF"


# --- read endpoints never fail (item 5, read side) -----------------------------------


def _message_row(meta: Any, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    row = {
        "id": str(uuid.uuid4()),
        "tenant": "default",
        "key": None,
        "account": "default",
        "state": "cancelled",
        "priority": 2,
        "sender": "a@example.com",
        "to_addrs": ["b@example.com"],
        "cc_addrs": [],
        "bcc_addrs": [],
        "subject": "stored by hand",
        "headers": {},
        "meta": meta,
        "message_id": "<x@example.com>",
        "pending": [],
        "delivered": 0,
        "attempt_count": 0,
        "created_at": now,
        "updated_at": now,
    }
    return {**row, **overrides}


async def test_deep_or_odd_stored_metadata_never_fails_a_read(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(delivery={"enabled": False}) as gw, api(gw) as client:
        deep, nan, fine = (
            _message_row(_nested(300)),
            _message_row({"x": float("nan")}),
            _message_row({"order": 42}),
        )
        async with gw.inbox.store.db.write() as conn:
            await conn.execute(insert(messages), [deep, nan, fine])

        listing = await client.get("/messages")
        assert listing.status_code == 200
        by_id = {m["id"]: m for m in listing.json()["items"]}
        assert by_id[fine["id"]]["metadata"] == {"order": 42}
        assert by_id[deep["id"]]["metadata"] == _nested(300)  # past pydantic's 255
        assert by_id[nan["id"]]["metadata"] == {
            "error": "metadata could not be shown as JSON: Out of range float values are not"
            " JSON compliant"
        }
        for row in (deep, nan):
            one = await client.get(f"/messages/{row['id']}")
            assert one.status_code == 200
            assert one.json()["subject"] == "stored by hand"
            assert one.json()["metadata"] == by_id[row["id"]]["metadata"]


async def test_deep_stored_capture_never_fails_the_inbox(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        capture_id = str(uuid.uuid4())
        row = {
            "id": capture_id,
            "tenant": "default",
            "source": "smtp",
            "received_at": datetime.now(UTC),
            "mail_from": "a@example.com",
            "rcpt_to": [_nested(300), float("inf")],
            "subject": "stored by hand",
            "from_header": "a@example.com",
            "to_header": "b@example.com",
            "headers": _nested(300),
            "attachments": [],
            "size": 1,
        }
        async with gw.inbox.store.db.write() as conn:
            await conn.execute(insert(inbox), [row])

        listing = await client.get("/inbox")
        assert listing.status_code == 200
        [item] = listing.json()["items"]
        assert item["subject"] == "stored by hand"
        assert item["envelope"]["error"].startswith("envelope could not be shown as JSON")
        event = await client.get(f"/inbox/{capture_id}")
        assert event.status_code == 200
        assert event.json()["message"]["headers"] == _nested(300)
        assert event.json()["envelope"]["error"].startswith("envelope could not be shown")


# --- search, tag and paging parameters no engine refuses -------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def dev_on_each_engine(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Gateway]:
    """``mailgate dev`` on a SQLite file and on a fresh PostgreSQL database, holding one
    message (Cc'd, tagged ``x y``)."""
    url = await engine_url(request, db_url, "mailgate_web_hardening")
    async with Gateway(fast_settings(url), mode=Mode.DEV) as gw:
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as client:
            sent = await client.post(
                "/mailpit/api/v1/send",
                json={"From": {"Email": "app@example.com"}, "To": [{"Email": "to@example.com"}],
                      "Cc": [{"Email": "cc@example.com"}], "Subject": "hi", "Text": "x",
                      "Tags": ["x y"]},
            )  # fmt: skip
            assert sent.status_code == 200
        yield gw


async def test_nul_in_a_search_or_a_tag_name_is_cleaned_as_stored_text_is(
    dev_on_each_engine: Gateway,
) -> None:
    """A NUL (or a lone surrogate, in a JSON body) in a search or a tag name searches for
    the U+FFFD a stored value holds in its place, so here it matches nothing. Each of
    these was a 500 on PostgreSQL ('invalid byte sequence for encoding "UTF8": 0x00');
    on SQLite ``q=%00`` matched every message, so ``DELETE ?q=%00`` deleted them all."""
    async with httpx.AsyncClient(base_url=dev_on_each_engine.http_url, timeout=10) as client:
        for q in ("\x00", "to:\x00", "cc:\x00", "bcc:\x00", "reply-to:\x00", "addressed:\x00"):
            found = await client.get("/api/v1/inbox", params={"q": q})
            assert (found.status_code, found.json()["items"]) == (200, []), q
        for q in ("\x00", "x\x00y"):
            cleared = await client.delete("/api/v1/inbox", params={"q": q})
            assert (cleared.status_code, cleared.json()) == (200, {"deleted": 0})
        waited = await client.get("/api/v1/inbox/wait", params={"q": "\x00", "timeout": 0})
        assert waited.status_code == 408

        mp = "/mailpit/api/v1"
        search = await client.get(f"{mp}/search", params={"query": "\x00"})
        assert (search.status_code, search.json()["messages_count"]) == (200, 0)
        latest = await client.get(f"{mp}/message/latest", params={"query": "\x00"})
        assert (latest.status_code, latest.text) == (404, "Message not found")
        for body in (
            '{"Search": "cc:\\u0000", "Read": true}',
            '{"Search": "cc:\\ud800", "Read": true}',
        ):
            marked = await client.put(f"{mp}/messages", content=body, headers=JSON)
            assert (marked.status_code, marked.text) == (200, "ok"), body
        assert (await client.delete(f"{mp}/tags/%00")).text == "ok"
        assert (await client.put(f"{mp}/tags/x%00y", json={"Name": "z"})).text == "ok"

        listed = (await client.get(f"{mp}/messages")).json()
        assert (listed["total"], listed["unread"], listed["tags"]) == (1, 1, ["x y"])


#: size searches past the size column (INTEGER), and how many of the one message match
HUGE_SIZES = [
    ("larger:2048mb", 0),
    ("larger:2147483648", 0),
    ("smaller:2048mb", 1),
    ("larger:" + "9" * 400, 0),
    ("-larger:99999999999999999999", 1),
]
#: Mailpit paging past 64 bits, and how many messages the page holds
HUGE_PAGING = [
    ({"start": "99999999999999999999"}, 0),
    ({"limit": "9223372036854775808"}, 1),
    ({"start": str(2**63 - 1), "limit": "99999999999999999999"}, 0),
    ({"start": "0", "limit": "9" * 5000}, 1),  # past int()'s 4,300 digits: the default
]


async def test_numbers_past_what_a_column_holds_are_clamped_or_refused(
    dev_on_each_engine: Gateway,
) -> None:
    """A size past the size column (INTEGER) or a Mailpit ``start``/``limit`` past 64
    bits were bound as they were: a 500 on PostgreSQL (out of int32/int64 range), past 64
    bits on SQLite too. A size search past any message matches nothing (``larger:``) or
    everything (``smaller:``), a start past the end is an empty page and a limit all;
    a Unix time past the year 9999 is refused like any unreadable date."""
    async with httpx.AsyncClient(base_url=dev_on_each_engine.http_url, timeout=10) as client:
        for q, count in HUGE_SIZES:
            found = await client.get("/api/v1/inbox", params={"q": q})
            assert (found.status_code, len(found.json()["items"])) == (200, count), q[:30]
        for q in ("before:99999999999999999999", "after:999999999999"):
            refused = await client.get("/api/v1/inbox", params={"q": q})
            assert refused.status_code == 422 and "year 10000" in refused.text

        mp = "/mailpit/api/v1"
        for params, count in HUGE_PAGING:
            page = await client.get(f"{mp}/messages", params=params)
            assert (page.status_code, page.json()["count"]) == (200, count), params
            found = await client.get(f"{mp}/search", params={"query": "hi", **params})
            assert (found.status_code, found.json()["count"]) == (200, count), params
        past = await client.get(f"{mp}/messages", params={"start": "99999999999999999999"})
        assert (past.json()["start"], past.json()["total"]) == (2**63 - 1, 1)
        refused = await client.get(f"{mp}/search", params={"query": "before:99999999999999999999"})
        assert refused.status_code == 400 and "year 10000" in refused.text


# --- Host header check (item 13) -------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost", 200),
        ("LOCALHOST:8787", 200),
        ("app.localhost:1", 200),
        ("127.0.0.1", 200),
        ("127.1.2.3:80", 200),
        ("[::1]:8787", 200),
        ("mail.example.test", 200),
        ("mail.example.test:4444", 200),
        ("pinned.example.test:8080", 200),
        ("pinned.example.test:9090", 421),
        ("evil.example", 421),
        ("evil.example:8787", 421),
        ("localhost.evil.example", 421),
        ("127.0.0.1.nip.io", 421),
    ],
)
async def test_without_a_token_only_loopback_and_allowed_hosts_are_served(
    start_gateway: GatewayFactory, host: str, status: int
) -> None:
    allowed = {"allowed_hosts": ["mail.example.test", "pinned.example.test:8080"]}
    async with start_gateway(http=allowed) as gw, api(gw) as client:
        response = await client.get("/messages", headers={"Host": host})
        assert response.status_code == status, response.text
        if status == 421:
            assert "DNS rebinding" in response.json()["detail"]


async def test_with_a_token_any_host_is_served(start_gateway: GatewayFactory) -> None:
    async with start_gateway(api_token="s3cret") as gw, api(gw, token="s3cret") as client:
        response = await client.get("/messages", headers={"Host": "evil.example"})
        assert response.status_code == 200


# --- methods, and POST /messages' documented error shapes (item 12) -----------------


async def test_405_and_options_list_every_method_of_the_path(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, api(gw) as client:
        options = await client.options("/messages/some-id")
        assert options.status_code == 204
        assert options.headers["allow"] == "DELETE, GET, OPTIONS"
        put = await client.put("/messages/some-id")
        assert put.status_code == 405
        assert put.headers["allow"] == "DELETE, GET, OPTIONS"
        assert put.json() == {
            "detail": "method PUT is not allowed here; allowed: DELETE, GET, OPTIONS"
        }
        patch = await client.patch("/messages")
        assert patch.headers["allow"] == "GET, OPTIONS, POST"
        assert (await client.options("/nowhere")).status_code == 404


async def test_submission_errors_have_the_documented_shapes(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, api(gw) as client:
        bodyless = await client.post("/messages")
        assert bodyless.status_code == 422
        assert bodyless.json() == {
            "queued": 0,
            "ids": [],
            "duplicates": [],
            "rejected": [
                {
                    "index": 0,
                    "id": None,
                    "reason": "body: a JSON message or list of messages is required",
                }
            ],
        }
        json_type = {"Content-Type": "application/json"}
        broken = await client.post("/messages", content=b'{"to": ', headers=json_type)
        assert broken.status_code == 400
        assert broken.json() == {"detail": "body: invalid JSON: Expecting value at line 1 column 8"}
        nan = await client.post("/messages", content=b'{"x": NaN}', headers=json_type)
        assert nan.status_code == 400 and "NaN" in nan.json()["detail"]
        deep = await client.post("/messages", content=b"[" * 100_000, headers=json_type)
        assert deep.json() == {"detail": "body: invalid JSON: nested too deeply"}
        form = await client.post(
            "/messages", content=b'{"to": "a@example.com"}', headers={"Content-Type": "text/plain"}
        )
        assert form.status_code == 415
        assert "application/json" in form.json()["detail"]


# --- /docs without a CDN -----------------------------------------------------------------


async def test_docs_reference_only_same_origin_assets(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, httpx.AsyncClient(base_url=gw.http_url, timeout=30) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?'([^']+)'""", page.text)
        found = {a or b for a, b in urls}
        assert any(u.endswith(".js") for u in found) and any(u.endswith(".css") for u in found)
        assert any(u.endswith("openapi.json") for u in found)
        for url in found:
            assert url.startswith("/") and not url.startswith("//"), url
            assert (await client.get(url)).status_code == 200, url
        schema = (await client.get(next(u for u in found if u.endswith("openapi.json")))).json()
        assert schema["paths"].keys() == (await client.get("/openapi.json")).json()["paths"].keys()
