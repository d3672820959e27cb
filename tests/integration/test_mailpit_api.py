"""The Mailpit-compatible API (``/mailpit``, issue 10): Mailpit 1.30's JSON shapes and
statuses, checked with httpx against ``mailgate dev`` in-process and mail sent over SMTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.web import api_mailpit, mailpit_checks
from tests.integration.conftest import GatewayFactory, send_raw, threads_of

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
SUMMARY_FIELDS = [
    "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created",
    "Tags", "Size", "Attachments", "Snippet",
]  # fmt: skip
MESSAGE_FIELDS = [
    "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "ReturnPath", "Subject",
    "ListUnsubscribe", "Date", "Tags", "Text", "HTML", "Size", "Inline", "Attachments",
]  # fmt: skip


def html_part(msg: EmailMessage) -> EmailMessage:
    """The html alternative of a message just given one (to relate an image to it)."""
    payload = msg.get_payload()
    assert isinstance(payload, list) and isinstance(payload[1], EmailMessage)
    return payload[1]


def rich_message(subject: str = "Your receipt") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "Jane Doe <jane@example.com>, bob@example.com"
    msg["Cc"] = "carol@example.com"
    msg["Reply-To"] = "help@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    msg["Date"] = "Tue, 02 Jan 2024 10:30:00 +0200"
    msg["List-Unsubscribe"] = "<mailto:unsub@example.com>, <https://example.com/unsub>"
    msg["X-Tags"] = "orders, receipts"
    msg.set_content("Thanks for your order.\nCode: 123456\n")
    msg.add_alternative('<p>Thanks! <img src="cid:logo"> <a href="https://example.com/o">o</a></p>',
                        subtype="html")  # fmt: skip
    html = html_part(msg)
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo>", disposition="inline",
                     filename="logo.png")  # fmt: skip
    msg.add_attachment(b"%PDF-1.4 receipt", maintype="application", subtype="pdf",
                       filename="receipt.pdf")  # fmt: skip
    return msg


def plain(subject: str, to: str = "dev@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "app@example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"Body of {subject}")
    return msg


def smtp_send(gw: Gateway, msg: EmailMessage, *, user: str | None = None, **kw: Any) -> None:
    assert gw.smtp_address is not None
    with smtplib.SMTP(*gw.smtp_address, timeout=10) as client:
        if user is not None:
            client.ehlo()
            client.user, client.password = user, "secret"
            client.auth("PLAIN", client.auth_plain)
        client.send_message(msg, **kw)


@asynccontextmanager
async def mailpit(gw: Gateway, base: str = "/mailpit") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{gw.http_url}{base}", timeout=10) as client:
        yield client


async def send(gw: Gateway, msg: EmailMessage, **kw: Any) -> None:
    await asyncio.to_thread(smtp_send, gw, msg, **kw)


async def test_list_shape_counts_and_paging(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send(gw, rich_message())
        for i in range(3):
            await send(gw, plain(f"note {i}"))
        response = await mp.get("/api/v1/messages", params={"start": 1, "limit": 2})
        assert response.status_code == 200
        body = response.json()
        assert list(body) == [
            "total", "unread", "count", "messages_count", "messages_unread", "start", "tags",
            "messages",
        ]  # fmt: skip
        assert (body["total"], body["unread"], body["count"], body["start"]) == (4, 4, 2, 1)
        assert (body["messages_count"], body["messages_unread"]) == (4, 4)
        assert body["tags"] == ["orders", "receipts"]
        assert [m["Subject"] for m in body["messages"]] == ["note 1", "note 0"]
        oldest = (await mp.get("/api/v1/messages", params={"start": 3})).json()["messages"][0]
        assert list(oldest) == SUMMARY_FIELDS
        assert oldest["From"] == {"Name": "Shop", "Address": "shop@example.com"}
        assert oldest["To"] == [
            {"Name": "Jane Doe", "Address": "jane@example.com"},
            {"Name": "", "Address": "bob@example.com"},
        ]
        assert oldest["Cc"] == [{"Name": "", "Address": "carol@example.com"}]
        assert oldest["ReplyTo"] == [{"Name": "", "Address": "help@example.com"}]
        assert oldest["MessageID"] == "Your-receipt@example.com"
        assert oldest["Read"] is False and oldest["Attachments"] == 1
        assert oldest["Tags"] == ["orders", "receipts"]
        assert oldest["Snippet"].startswith("Thanks!")
        assert oldest["Created"].endswith("Z") and "T" in oldest["Created"]
        # garbage paging falls back to Mailpit's defaults instead of failing
        assert (await mp.get("/api/v1/messages?start=x&limit=-3")).json()["count"] == 4


async def test_message_headers_raw_and_parts(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send(gw, rich_message())
        message = (await mp.get("/api/v1/message/latest")).json()
        assert list(message) == MESSAGE_FIELDS
        assert message["Read"] is True  # reading it marks it read
        assert message["Date"] == "2024-01-02T10:30:00+02:00"
        assert message["ReturnPath"] == "shop@example.com"
        assert message["Text"] == "Thanks for your order.\nCode: 123456\n"
        assert message["ListUnsubscribe"] == {
            "Header": "<mailto:unsub@example.com>, <https://example.com/unsub>",
            "Links": ["mailto:unsub@example.com", "https://example.com/unsub"],
            "Errors": "",
            "HeaderPost": "",
        }
        # enmime's numbering: mixed(0) > alternative(1) > related(1.2) > png(1.2.2); pdf is 2
        [logo] = message["Inline"]
        assert logo == {
            "PartID": "1.2.2", "FileName": "logo.png", "ContentType": "image/png",
            "ContentID": "logo", "Size": len(PNG),
            "Checksums": {
                "MD5": hashlib.md5(PNG).hexdigest(), "SHA1": hashlib.sha1(PNG).hexdigest(),
                "SHA256": hashlib.sha256(PNG).hexdigest(),
            },
        }  # fmt: skip
        [pdf] = message["Attachments"]
        assert (pdf["PartID"], pdf["FileName"], pdf["ContentType"]) == (
            "2", "receipt.pdf", "application/pdf"
        )  # fmt: skip
        listed = (await mp.get("/api/v1/messages")).json()
        assert listed["unread"] == 0 and listed["messages"][0]["Read"] is True

        mid = message["ID"]
        part = await mp.get(f"/api/v1/message/{mid}/part/2")
        assert part.status_code == 200 and part.content == b"%PDF-1.4 receipt"
        assert part.headers["content-type"] == "application/pdf"
        assert part.headers["content-disposition"] == 'filename="receipt.pdf"'
        thumb = await mp.get(f"/api/v1/message/{mid}/part/1.2.2/thumb")
        assert (thumb.status_code, thumb.content) == (200, PNG)
        assert (await mp.get(f"/api/v1/message/{mid}/part/2/thumb")).status_code == 400
        missing = await mp.get(f"/api/v1/message/{mid}/part/9")
        assert (missing.status_code, missing.text) == (404, "404 page not found")

        headers = (await mp.get(f"/api/v1/message/{mid}/headers")).json()
        assert list(headers) == sorted(headers)
        assert headers["Message-Id"] == ["<Your-receipt@example.com>"]
        assert headers["X-Tags"] == ["orders, receipts"]
        raw = await mp.get(f"/api/v1/message/{mid}/raw")
        assert raw.headers["content-type"] == "text/plain; charset=utf-8"
        assert b"Subject: Your receipt" in raw.content
        assert "content-disposition" not in raw.headers
        download = await mp.get(f"/api/v1/message/{mid}/raw", params={"dl": "1"})
        assert download.headers["content-disposition"] == f'attachment; filename="{mid}.eml"'

        html = await mp.get(f"/view/{mid}.html")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert f'src="/mailpit/api/v1/message/{mid}/part/1.2.2"' in html.text
        assert "sandbox" in html.headers["content-security-policy"]
        text = await mp.get("/view/latest.txt")
        assert text.text == "Thanks for your order.\nCode: 123456\n"
        # clients with a trailing slash in their base URL ask for //view and //api
        base = f"{gw.http_url}/mailpit/"
        assert (await mp.get(f"{base}/view/{mid}.txt")).status_code == 200
        assert (await mp.get(f"{base}//api/v1/messages")).json()["total"] == 1

        assert (await mp.get("/api/v1/message/nope")).status_code == 404
        unknown = await mp.get("/api/v1/message/latest", params={"query": "subject:none"})
        assert (unknown.status_code, unknown.text) == (404, "Message not found")


async def test_a_part_s_name_and_type_that_are_not_latin_1_are_served(
    start_gateway: GatewayFactory,
) -> None:
    """A response header is Latin-1: a part named ``\ufffd`` (an RFC 2231 name in a
    charset Python does not know) or typed ``image/png\u202e`` was a 500."""
    raw = (
        b"From: a@example.com\r\nSubject: odd parts\r\n"
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b"--zz\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%22%0A.pdf\r\n\r\nx\r\n"
        b"--zz\r\nContent-Type: image/png\xe2\x80\xae; name=a.png\r\n"
        b"Content-Disposition: inline\r\n\r\ny\r\n--zz--\r\n"
    )
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send_raw(gw, raw)
        pdf = await mp.get("/api/v1/message/latest/part/2")
        assert (pdf.status_code, pdf.content) == (200, b"x")
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == (
            "filename=\"_.pdf\"; filename*=UTF-8''%E2%82%AC%22.pdf"
        )
        odd = await mp.get("/api/v1/message/latest/part/3")
        assert (odd.status_code, odd.content) == (200, b"y")
        assert odd.headers["content-type"] == "application/octet-stream"
        thumb = await mp.get("/api/v1/message/latest/part/3/thumb")
        assert thumb.status_code == 400 and "not an image" in thumb.text


async def test_the_html_view_links_many_parts_in_one_pass_off_the_event_loop(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/view/{id}.html`` replaced the ``cid:`` references of each part in turn, on the
    event loop: 990 parts and 3.6 MB of HTML held every other request 15 s. Now one pass,
    in a worker thread."""
    passes = threads_of(monkeypatch, api_mailpit, "_linked")
    cids = 990
    html = "".join(f'<img src="cid:i{n % cids:03}">' for n in range(200_000))
    images = "".join(
        f"--r\r\nContent-Type: image/gif\r\nContent-ID: <i{n:03}>\r\n\r\nG\r\n" for n in range(cids)
    )
    raw = (
        "From: a@example.com\r\nSubject: refs\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\n"
        "Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(html.encode()).decode().replace("\n", "\r\n")
        + images
        + "--r--\r\n"
    ).encode()
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send_raw(gw, raw)
        mid = (await mp.get("/api/v1/message/latest")).json()["ID"]
        shown = await mp.get(f"/view/{mid}.html", timeout=60)
    assert shown.status_code == 200
    assert shown.text.count(f"/mailpit/api/v1/message/{mid}/part/") == 200_000
    assert f'src="/mailpit/api/v1/message/{mid}/part/{cids + 1}"' in shown.text
    assert passes == ["worker"]


async def test_a_big_message_s_json_and_checks_are_made_off_the_event_loop(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list's summary (20,000 Cc addresses) and html-check and link-check reading
    a megabyte of HTML each held every other request about a second: each is made in a
    worker thread."""
    made = {
        name: threads_of(monkeypatch, module, name)
        for module, name in [
            (api_mailpit, "summary_json"),
            (api_mailpit, "message_json"),
            (api_mailpit, "html_check"),
            (mailpit_checks, "find_links"),
        ]
    }
    cc = ",\r\n ".join(f"u{n}@example.com" for n in range(40_000))
    html = base64.encodebytes(b"<b>x</b>" * 125_000).decode().replace("\n", "\r\n")
    raw = (
        f"From: a@example.com\r\nSubject: big\r\nCc: {cc}\r\nContent-Type: text/html\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{html}"
    ).encode()
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send_raw(gw, raw)
        mid = (await mp.get("/api/v1/message/latest")).json()["ID"]
        for path in (
            "/api/v1/messages",
            f"/api/v1/message/{mid}",
            f"/api/v1/message/{mid}/html-check",
            f"/api/v1/message/{mid}/link-check",
        ):
            assert (await mp.get(path, timeout=60)).status_code == 200, path
    assert {name: set(calls) for name, calls in made.items()} == {n: {"worker"} for n in made}


async def test_a_big_send_request_is_read_and_built_off_the_event_loop(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``POST /api/v1/send`` with a 40 MB attachment held every other request 0.7 s:
    its JSON was parsed, its base64 decoded and its message built on the event loop."""
    made = threads_of(monkeypatch, api_mailpit, "sendable")
    content = base64.b64encode(b"x" * 3_000_000).decode()
    request = {
        "From": {"Email": "a@example.com"},
        "To": [{"Email": "b@example.com"}],
        "Subject": "big",
        "Attachments": [{"Filename": "a.bin", "Content": content}],
    }
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        sent = await mp.post("/api/v1/send", json=request, timeout=60)
        assert sent.status_code == 200, sent.text
        message = (await mp.get(f"/api/v1/message/{sent.json()['ID']}")).json()
        assert [a["Size"] for a in message["Attachments"]] == [3_000_000]
    assert set(made) == {"worker"}


async def test_search_read_status_tags_and_deletes(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send(gw, rich_message())
        for i in range(3):
            await send(gw, plain(f"note {i}", to=f"user{i}@example.org"))
        found = (await mp.get("/api/v1/search", params={"query": "to:example.org"})).json()
        assert (found["total"], found["messages_count"], found["messages_unread"]) == (4, 3, 3)
        assert found["count"] == 3
        bad = await mp.get("/api/v1/search", params={"query": " "})
        assert (bad.status_code, bad.text) == (400, "Error: no search query")
        assert (
            await mp.get("/api/v1/search", params={"query": "before:nonsense"})
        ).status_code == 400

        ids = [m["ID"] for m in found["messages"]]
        put = await mp.put("/api/v1/messages", json={"IDs": ids[:2], "Read": True})
        assert (put.status_code, put.text) == (200, "ok")
        assert (await mp.get("/api/v1/messages")).json()["unread"] == 2
        await mp.put("/api/v1/messages", json={"Search": "subject:receipt", "Read": True})
        assert (await mp.get("/api/v1/messages")).json()["unread"] == 1
        await mp.put("/api/v1/messages", json={"read": False})  # no IDs, no search: all
        assert (await mp.get("/api/v1/messages")).json()["unread"] == 4
        both = await mp.put("/api/v1/messages", json={"IDs": ids, "Search": "x"})
        assert both.status_code == 400

        assert (
            await mp.put("/api/v1/tags", json={"IDs": ids[:2], "Tags": ["Beta", "alpha"]})
        ).text == "ok"
        assert (await mp.get("/api/v1/tags")).json() == ["alpha", "Beta", "orders", "receipts"]
        assert (await mp.put("/api/v1/tags/alpha", json={"Name": "Gamma"})).text == "ok"
        assert (await mp.delete("/api/v1/tags/Beta")).text == "ok"
        tagged = (await mp.get("/api/v1/search", params={"query": "tag:Gamma"})).json()
        assert sorted(m["ID"] for m in tagged["messages"]) == sorted(ids[:2])
        assert tagged["messages"][0]["Tags"] == ["Gamma"]

        deleted = await mp.request("DELETE", "/api/v1/messages", json={"IDs": [ids[0], "nope"]})
        assert (deleted.status_code, deleted.text) == (200, "ok")
        assert (await mp.get("/api/v1/messages")).json()["total"] == 3
        assert (await mp.delete("/api/v1/search", params={"query": "subject:note"})).text == "ok"
        assert (await mp.get("/api/v1/messages")).json()["total"] == 1
        assert (await mp.delete("/api/v1/messages")).text == "ok"  # no body: everything
        assert (await mp.get("/api/v1/messages")).json()["total"] == 0


async def test_send_chaos_info_and_webui(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        sent = await mp.post(
            "/api/v1/send",
            json={
                "From": {"Email": "app@example.com", "Name": "App"},
                "To": [{"Email": "jane@example.com", "Name": "Jane"}],
                "Bcc": ["hidden@example.com"],
                "Subject": "Sent through the API",
                "Text": "plain", "HTML": "<b>html</b>", "Tags": ["api"],
                "Headers": {"X-Order": "42"},
                "Attachments": [{"Filename": "a.txt", "Content": base64.b64encode(b"hi").decode()}],
            },
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
        message = (await mp.get(f"/api/v1/message/{sent.json()['ID']}")).json()
        assert message["Subject"] == "Sent through the API" and message["Tags"] == ["api"]
        assert message["Bcc"] == [{"Name": "", "Address": "hidden@example.com"}]
        assert [a["FileName"] for a in message["Attachments"]] == ["a.txt"]
        refused = await mp.post("/api/v1/send", json={"From": {"Email": "nope"}})
        assert refused.status_code == 400 and refused.json() == {
            "Error": "invalid From address: nope"
        }
        header = await mp.post(
            "/api/v1/send",
            json={"From": {"Email": "a@example.com"}, "Headers": {"Subject": "x"}},
        )
        assert header.json() == {"Error": 'cannot overwrite header: "Subject"'}

        chaos = (await mp.get("/api/v1/chaos")).json()
        assert chaos == {
            "Authentication": {"ErrorCode": 451, "Probability": 0},
            "Recipient": {"ErrorCode": 451, "Probability": 0},
            "Sender": {"ErrorCode": 451, "Probability": 0},
        }
        set_ = await mp.put(
            "/api/v1/chaos", json={"Recipient": {"ErrorCode": 550, "Probability": 50}}
        )
        assert set_.json()["Recipient"] == {"ErrorCode": 550, "Probability": 50}
        assert (await mp.get("/api/v1/chaos")).json()["Recipient"]["Probability"] == 50
        wrong = await mp.put("/api/v1/chaos", json={"Sender": {"ErrorCode": 200, "Probability": 5}})
        assert wrong.status_code == 400
        assert (await mp.put("/api/v1/chaos", json={})).json() == chaos

        info = (await mp.get("/api/v1/info")).json()
        assert (info["Messages"], info["Unread"], info["Tags"]) == (1, 0, {"api": 1})
        assert set(info["RuntimeStats"]) >= {"Uptime", "Memory", "SMTPAccepted"}
        webui = (await mp.get("/api/v1/webui")).json()
        assert webui["MessageRelay"]["Enabled"] is False and webui["ChaosEnabled"] is True
        options = await mp.options("/api/v1/messages")
        assert options.status_code == 200


async def test_send_refuses_an_attachment_typed_multipart(start_gateway: GatewayFactory) -> None:
    """A multipart type names a container (RFC 2046 §5.1.1: parts between boundaries), not
    a file's bytes: an attachment sent with one was written as a multipart entity with no
    boundary, its base64 body lost (an empty part in Mailpit's JSON, a nameless text one
    in the inbox's)."""
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        content = base64.b64encode(b"hello").decode()
        request = {
            "From": {"Email": "a@example.com"},
            "To": [{"Email": "b@example.com"}],
            "Subject": "s",
            "Attachments": [{"Filename": "a.bin", "Content": content, "ContentType": ""}],
        }
        for media_type in ("multipart/mixed", " Multipart/Alternative"):
            request["Attachments"][0]["ContentType"] = media_type  # type: ignore[index]
            refused = await mp.post("/api/v1/send", json=request)
            assert refused.status_code == 400, refused.text
            assert "multipart" in refused.json()["Error"]
        assert (await mp.get("/api/v1/messages")).json()["total"] == 0


async def test_send_refuses_an_attachment_that_is_not_base64(
    start_gateway: GatewayFactory,
) -> None:
    """Characters outside base64's alphabet were dropped, not refused: ``"!!!"`` was
    captured as an empty file. Mailpit (Go's ``StdEncoding.DecodeString``) answers 400;
    line breaks, which Go skips, still pass, as does a ``data:…;base64,`` prefix."""
    request: dict[str, Any] = {
        "From": {"Email": "a@example.com"},
        "To": [{"Email": "b@example.com"}],
        "Subject": "s",
    }
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        for bad in ("!!!", "aGk=!", "aGk*"):
            request["Attachments"] = [{"Filename": "a.txt", "Content": bad}]
            refused = await mp.post("/api/v1/send", json=request)
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["Error"].startswith('error decoding base64 attachment "a.txt"')
        assert (await mp.get("/api/v1/messages")).json()["total"] == 0
        for good in ("aGVs\r\nbG8=\n", "data:text/plain;base64,aGVsbG8="):
            request["Attachments"] = [{"Filename": "a.txt", "Content": good}]
            sent = await mp.post("/api/v1/send", json=request)
            assert sent.status_code == 200, (good, sent.text)
            message = (await mp.get(f"/api/v1/message/{sent.json()['ID']}")).json()
            assert [a["Size"] for a in message["Attachments"]] == [5]


async def test_release_without_a_relay_in_dev_is_refused(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, mailpit(gw) as mp:
        await send(gw, plain("hello"))
        response = await mp.post("/api/v1/message/latest/release", json={"To": ["a@example.com"]})
        assert response.status_code == 400 and "not configured" in response.text


async def test_per_inbox_base_url(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV, inbox={"sort_by": "auth"}) as gw:
        await send(gw, plain("for a"), user="run-a")
        await send(gw, plain("for b"), user="run-b")
        async with mailpit(gw, "/mailpit/run-a") as a, mailpit(gw, "/mailpit/run-b") as b:
            listed = (await a.get("/api/v1/messages")).json()
            assert [m["Subject"] for m in listed["messages"]] == ["for a"]
            assert listed["messages"][0]["Username"] == "run-a"
            assert (await b.get("/api/v1/message/latest")).json()["Subject"] == "for b"
            other = listed["messages"][0]["ID"]
            assert (await b.get(f"/api/v1/message/{other}")).status_code == 404
            assert (await b.delete("/api/v1/messages")).text == "ok"
            assert (await a.get("/api/v1/messages")).json()["total"] == 1
            sent = await b.post(
                "/api/v1/send",
                json={"From": {"Email": "x@example.com"}, "To": [{"Email": "y@example.com"}]},
            )
            newest = (await b.get("/api/v1/messages")).json()["messages"][0]
            assert newest["ID"] == sent.json()["ID"]
            assert (await a.get("/api/v1/messages")).json()["total"] == 1
        async with mailpit(gw, "/mailpit/bad name!") as bad:
            assert (await bad.get("/api/v1/messages")).status_code == 404


async def test_token_as_bearer_or_basic_password(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV, api_token="s3cret-token-for-tests") as gw:
        await send(gw, plain("hello"))
        async with mailpit(gw) as mp:
            denied = await mp.get("/api/v1/messages")
            assert denied.status_code == 401
            bearer = {"Authorization": "Bearer s3cret-token-for-tests"}
            assert (await mp.get("/api/v1/messages", headers=bearer)).status_code == 200
            basic = await mp.get("/api/v1/messages", auth=("mailpit", "s3cret-token-for-tests"))
            assert basic.status_code == 200 and basic.json()["total"] == 1
            wrong = await mp.get("/api/v1/messages", auth=("mailpit", "wrong"))
            assert wrong.status_code == 401
