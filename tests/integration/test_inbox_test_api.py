"""The test API of the inbox against `mailgate dev`: real sign-in mails sent with smtplib,
read back with httpx — links, one-time codes, waiting for a message, live events (SSE)."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage

import httpx

from mailgate.app import Gateway, Mode
from mailgate.clock import SystemClock
from mailgate.store import TokenStore
from tests.integration.conftest import GatewayFactory, api, sse_events
from tests.integration.test_capture_handlers import CLEAN_SUBJECT, assert_cleaned, send_unclean

BUTTON = "https://app.example.com/auth/confirm?token=Zm9vYmFy&amp;next=%2Fhome"
BUTTON_URL = "https://app.example.com/auth/confirm?token=Zm9vYmFy&next=%2Fhome"

SIGN_IN_HTML = f"""<!DOCTYPE html>
<html><head><title>Sign in to Example 2024</title>
<style>.btn {{ background: #0a66c2 }} td {{ padding: 8px }}</style></head>
<body>
<div style="display:none">Your Example sign-in code</div>
<table role="presentation" width="100%"><tbody>
  <tr><td><img src="https://cdn.example.com/logo.png" alt="Example"></td></tr>
  <tr><td><h1>Sign in to Example</h1></td></tr>
  <tr><td>Enter this verification code on the sign-in page:</td></tr>
  <tr><td style="font-size:32px;letter-spacing:6px"><b>739201</b></td></tr>
  <tr><td>Or use the button:</td></tr>
  <tr><td><a href="{BUTTON}" class="btn"
        style="display:inline-block">  Sign
        in   to   Example </a></td></tr>
  <tr><td>Button not working? Paste this link:
      <a href="{BUTTON}">{BUTTON}</a></td></tr>
  <tr><td style="color:#999">Example Inc, 1600 Amphitheatre Pkwy, Mountain View, CA 94043
      &middot; <a href="https://example.com/privacy">Privacy</a>
      &middot; <a href="https://example.com/help">Help</a> &copy; 2024</td></tr>
</tbody></table></body></html>"""


def _send(gw: Gateway, msg: EmailMessage, *more: EmailMessage) -> None:
    assert gw.smtp_address is not None
    with smtplib.SMTP(*gw.smtp_address, timeout=10) as client:
        for m in (msg, *more):
            assert client.send_message(m) == {}


def _mail(to: str, subject: str, text: str | None = None, html: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Example <no-reply@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html or "", subtype="html")
    return msg


async def _until(done: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


async def _only_id(client: httpx.AsyncClient) -> str:
    [item] = (await client.get("/inbox")).json()["items"]
    return str(item["id"])


async def test_html_sign_in_mail_links_once_each_with_anchor_text_and_code_in_a_table(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_send, gw, _mail("ana@example.net", "Sign in", html=SIGN_IN_HTML))
        capture_id = await _only_id(client)

        links = (await client.get(f"/inbox/{capture_id}/links")).json()["links"]
        assert links == [
            {"url": BUTTON_URL, "text": "Sign in to Example"},
            {"url": "https://example.com/privacy", "text": "Privacy"},
            {"url": "https://example.com/help", "text": "Help"},
        ]

        codes = (await client.get(f"/inbox/{capture_id}/codes")).json()["codes"]
        assert codes[0]["code"] == "739201" and codes[0]["context"] == "739201"
        assert codes[0]["score"] >= 0.75
        # the postcode and the copyright year are numbers, not the code
        assert all(c["score"] < codes[0]["score"] / 2 for c in codes[1:]), codes
        assert "2024" not in {c["code"] for c in codes}


async def test_text_only_magic_link_and_code(start_gateway: GatewayFactory) -> None:
    text = (
        "Hi Ana,\n\nClick to sign in (valid for 15 minutes):\n"
        "https://app.example.com/magic?t=XyZ123.\n\n"
        "Or enter it by hand. Your code is 482913\n\n"
        "(Same link: https://app.example.com/magic?t=XyZ123)\n"
        "See https://en.wikipedia.org/wiki/Magic_link_(authentication), thanks!\n"
    )
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_send, gw, _mail("ana@example.net", "Your link", text=text))
        capture_id = await _only_id(client)

        links = (await client.get(f"/inbox/{capture_id}/links")).json()["links"]
        assert links == [
            {"url": "https://app.example.com/magic?t=XyZ123", "text": None},
            {"url": "https://en.wikipedia.org/wiki/Magic_link_(authentication)", "text": None},
        ]
        [code] = (await client.get(f"/inbox/{capture_id}/codes")).json()["codes"]
        assert (
            code["code"] == "482913"
            and code["context"] == "Or enter it by hand. Your code is 482913"
        )


async def test_phone_price_year_and_order_number_never_outrank_the_code(
    start_gateway: GatewayFactory,
) -> None:
    text = (
        "Thanks for your order #88812345 of 12 May 2024, total $1299 (or 1299 EUR, 1,299.00).\n"
        "Questions? Call +1 (555) 201-7788 or 0800 123 4567, Monday to Friday.\n"
        "Tracking number 55512345. Copyright 2023 Example Inc. Reference 2024-05-12.\n"
        "To confirm the delivery address, your one-time code: 5821\n"
    )
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_send, gw, _mail("bo@example.net", "Order 2024", text=text))
        capture_id = await _only_id(client)
        codes = (await client.get(f"/inbox/{capture_id}/codes")).json()["codes"]
        assert codes[0]["code"] == "5821", codes
        offered = {c["code"] for c in codes}
        assert not offered & {"88812345", "2024", "1299", "7788", "4567", "2023", "0800"}, codes
        assert all(c["score"] < codes[0]["score"] for c in codes[1:]), codes


async def test_codes_with_a_pattern_and_refused_patterns(start_gateway: GatewayFactory) -> None:
    text = "Your Example verification code is X7K9QP. Support id: 19f3c2\n"
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_send, gw, _mail("cy@example.net", "Code", text=text))
        capture_id = await _only_id(client)
        url = f"/inbox/{capture_id}/codes"
        assert (await client.get(url)).json()["codes"] == []
        [code] = (await client.get(url, params={"pattern": "[A-Z0-9]{6}"})).json()["codes"]
        assert code["code"] == "X7K9QP"
        # with a group, the group is the code
        [code] = (await client.get(url, params={"pattern": r"X7(K9\w\w)"})).json()["codes"]
        assert code["code"] == "K9QP"
        for bad in ("(", "(a+)+", "(ab|a)*", "x" * 101):
            refused = await client.get(url, params={"pattern": bad})
            assert refused.status_code == 422, bad
            assert refused.json()["detail"][0]["loc"] == ["query", "pattern"]
        missing = await client.get("/inbox/0190aaaa-0000-7000-8000-000000000000/codes")
        assert missing.status_code == 404


async def test_a_pattern_repeating_past_what_re_can_count_is_refused(
    start_gateway: GatewayFactory,
) -> None:
    """``a{99999999999}``: ``re`` raises OverflowError, not ``re.error``, for a count past
    4,294,967,294; the request was a 500 instead of a 422 naming the parameter."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        await asyncio.to_thread(_send, gw, _mail("cy@example.net", "Code", text="code 1234"))
        url = f"/inbox/{await _only_id(client)}/codes"
        for bad in ("a{99999999999}", "a{1,4294967296}"):
            refused = await client.get(url, params={"pattern": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["detail"][0]["loc"] == ["query", "pattern"]


async def test_wait_returns_a_message_sent_after_it_began_and_408_on_timeout(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        started = time.monotonic()
        waiting = asyncio.create_task(
            client.get("/inbox/wait", params={"to": "DEV@example.net", "timeout": 8})
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await asyncio.to_thread(_send, gw, _mail("dev@example.net", "Welcome", text="Hi"))
        sent = time.monotonic()
        answer = await waiting
        # woken by the capture, not by its once-a-second read of the store
        assert time.monotonic() - sent < 0.3
        assert answer.status_code == 200, answer.text
        event = answer.json()
        assert event["event"] == "EMAIL_RECEIVED" and event["message"]["subject"] == "Welcome"
        assert event["read"] is True  # as GET /inbox/{id} answers it
        assert 0.5 <= time.monotonic() - started < 8  # answered by the mail, not its timeout
        # a literal path owns every method: no PUT of a message called "wait"
        put = await client.put("/inbox/wait", json={"read": False})
        assert put.status_code == 405 and put.headers["allow"] == "GET, OPTIONS"

        # already there: counts without since, not with since = its id
        again = await client.get("/inbox/wait", params={"subject": "welc", "timeout": 0})
        assert again.json()["id"] == event["id"]
        since = {"subject": "welcome", "since": event["id"], "timeout": 0.3}
        started = time.monotonic()
        timed_out = await client.get("/inbox/wait", params=since)
        assert timed_out.status_code == 408 and "detail" in timed_out.json()
        assert 0.3 <= time.monotonic() - started < 2
        late = await client.get("/inbox/wait", params={"since": "2000-01-01T00:00:00Z"})
        assert late.json()["id"] == event["id"]
        future: dict[str, str | int] = {"since": "2999-01-01T00:00:00+02:00", "timeout": 0}
        assert (await client.get("/inbox/wait", params=future)).status_code == 408
        assert (await client.get("/inbox/wait", params={"since": "yesterday"})).status_code == 422


async def test_wait_matches_from_subject_and_search_query(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        newsletter = _mail("eve@example.net", "Weekly news", text="news")
        reset = _mail("eve@example.net", "Reset your password", text="reset code 7731")
        reset.replace_header("From", "Security <security@example.org>")
        await asyncio.to_thread(_send, gw, reset, newsletter)

        by_sender = await client.get(
            "/inbox/wait", params={"from": "security@example.org", "timeout": 1}
        )
        assert by_sender.json()["message"]["subject"] == "Reset your password"
        by_query = await client.get(
            "/inbox/wait", params={"q": 'subject:"reset your" -news', "timeout": 1}
        )
        assert by_query.json()["message"]["subject"] == "Reset your password"
        newest = await client.get("/inbox/wait", params={"to": "@example.net", "timeout": 1})
        assert newest.json()["message"]["subject"] == "Weekly news"
        nobody = await client.get("/inbox/wait", params={"to": "eve@example.com", "timeout": 0})
        assert nobody.status_code == 408
        bad = await client.get("/inbox/wait", params={"q": "before:someday", "timeout": 0})
        assert bad.status_code == 422


async def test_fifty_concurrent_waiters_each_get_their_own(start_gateway: GatewayFactory) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        waits = [
            asyncio.create_task(
                client.get("/inbox/wait", params={"to": f"user{i}@example.net", "timeout": 8})
            )
            for i in range(50)
        ]
        await _until(lambda: gw.inbox.events.count() == 50)  # every waiter is listening
        mails = [_mail(f"user{i}@example.net", f"hello {i}", text=f"for {i}") for i in range(50)]
        await asyncio.to_thread(_send, gw, *reversed(mails))
        answers = await asyncio.gather(*waits)
        for i, answer in enumerate(answers):
            assert answer.status_code == 200, answer.text
            assert answer.json()["envelope"]["to"] == [f"user{i}@example.net"]
            assert answer.json()["message"]["subject"] == f"hello {i}"
        assert gw.inbox.events.count() == 0  # every waiter has unsubscribed


async def test_wait_sees_mail_captured_by_another_process_on_the_same_database(
    start_gateway: GatewayFactory,
) -> None:
    """No event crosses processes: the waiter's periodic read of the store finds it."""
    async with (
        start_gateway(Mode.DEV) as waiting_gw,
        start_gateway(Mode.DEV) as other_gw,
        api(waiting_gw) as client,
    ):
        waiting = asyncio.create_task(
            client.get("/inbox/wait", params={"to": "far@example.net", "timeout": 8})
        )
        await asyncio.sleep(0.3)
        await asyncio.to_thread(_send, other_gw, _mail("far@example.net", "From afar", text="x"))
        answer = await waiting
        assert answer.status_code == 200 and answer.json()["message"]["subject"] == "From afar"


async def test_events_stream_new_and_delete_to_the_tenant_only(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        _, acme_token = await TokenStore(gw.accounts.db, SystemClock()).create("acme", "t")
        async with (
            api(gw, acme_token) as acme,
            client.stream("GET", "/inbox/events") as stream,
            acme.stream("GET", "/inbox/events") as acme_stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
            acme_events = sse_events(acme_stream)
            sent = time.monotonic()
            await asyncio.to_thread(_send, gw, _mail("sse@example.net", "Live", text="hi"))
            name, data = await asyncio.wait_for(anext(events), 5)
            assert time.monotonic() - sent < 2
            summary = json.loads(data)
            assert name == "new" and summary["subject"] == "Live"
            assert summary["envelope"]["to"] == ["sse@example.net"]

            assert (await client.delete(f"/inbox/{summary['id']}")).status_code == 200
            assert await asyncio.wait_for(anext(events), 5) == (
                "delete",
                json.dumps({"id": summary["id"]}, separators=(",", ":")),
            )
            # acme's stream heard nothing of the default tenant's mail: its first is its own
            mail = {"from": "a@acme.test", "to": "b@acme.test", "subject": "x", "text": "x"}
            acme_sent = await acme.post("/messages", json=mail)
            assert acme_sent.status_code == 202
            name, data = await asyncio.wait_for(anext(acme_events), 5)
            assert name == "new" and json.loads(data)["subject"] == "x"
        await _until(lambda: gw.inbox.events.count() == 0)  # both streams unsubscribed


async def test_events_stream_the_text_the_store_keeps(start_gateway: GatewayFactory) -> None:
    """The live event carried the record as the client wrote it (``"nul\\u0000subj"``,
    a lone surrogate) while GET /inbox/{id} showed the stored text, U+FFFD in their
    place: a page showing both disagreed with itself."""
    async with (
        start_gateway(Mode.DEV) as gw,
        api(gw) as client,
        client.stream("GET", "/inbox/events") as stream,
    ):
        assert gw.smtp_address is not None
        events = sse_events(stream)
        assert (await asyncio.to_thread(send_unclean, gw.smtp_address)).startswith(b"250 ")
        name, data = await asyncio.wait_for(anext(events), 5)
        summary = json.loads(data)
        assert name == "new" and summary["subject"] == CLEAN_SUBJECT
        read = (await client.get(f"/inbox/{summary['id']}")).json()
        assert read["message"]["subject"] == CLEAN_SUBJECT
        assert_cleaned(read)
