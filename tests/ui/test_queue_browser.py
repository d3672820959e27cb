"""The queue pages in headless Chromium, against a real upstream (aiosmtpd): a failed
message shows its 550 and the reply, Retry delivers it once the upstream accepts,
Cancel withdraws a deferred message and is refused for a sent one, filters and the
cursor narrow and page the list, and a message's HTML runs no script."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from mailgate.threaded import GatewayThread
from tests.peers import Upstream
from tests.ui.conftest import Watched


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """An aiosmtpd upstream in a loop of its own (the gateway has its own thread); ask
    for it before ``ui_gateway``, so the gateway has closed its connections when it
    stops."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    up = Upstream()
    asyncio.run_coroutine_threadsafe(up.__aenter__(), loop).result(10)
    yield up
    asyncio.run_coroutine_threadsafe(up.__aexit__(None, None, None), loop).result(10)
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(10)  # sessions end
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def submit(gw: GatewayThread, **message: Any) -> str:
    body = {"to": "a@example.com", "subject": "hello", "text": "body", **message}
    answer = httpx.post(gw.url + "/api/v1/messages", json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    ids: list[str] = answer.json()["ids"]
    return ids[0]


def wait_for_state(gw: GatewayThread, message_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        url = f"{gw.url}/api/v1/messages/{message_id}"
        found: dict[str, Any] = httpx.get(url, timeout=30).json()
        if found["state"] == state:
            return found
        assert time.monotonic() < deadline, f"still {found['state']}, not {state}"
        time.sleep(0.05)


def clean(watched: Watched) -> None:
    assert watched.errors == []
    assert watched.csp_violations() == []


def test_a_failed_message_shows_its_550_and_retry_delivers_it(
    upstream: Upstream, ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    upstream.data_replies.append("550 5.7.1 Message rejected as spam by upstream")
    gw = ui_gateway(relay_url=upstream.url)
    mid = submit(gw, subject="refused once")
    wait_for_state(gw, mid, "failed")
    watched = new_page()
    page = watched.page
    page.goto(f"{gw.url}/queue/{mid}")
    expect(page.locator("#message-state")).to_have_text("failed")
    attempt = page.locator("#attempts li.attempt")
    expect(attempt).to_have_count(1)
    expect(attempt.locator(".attempt-head")).to_contain_text("550")
    expect(attempt.locator(".attempt-head")).to_contain_text("5.7.1")
    expect(attempt.locator(".attempt-head")).to_contain_text("policy")
    expect(attempt.locator("pre.reply")).to_contain_text("Message rejected as spam by upstream")
    expect(page.locator("#recipients")).to_contain_text("a@example.com")
    assert upstream.received == []

    page.get_by_role("button", name="Retry").click()  # the upstream now answers 250
    expect(page.locator("#action-result")).to_have_text("queued again")
    expect(page.locator("#message-state")).to_have_text("sent", timeout=15_000)
    assert len(upstream.received) == 1
    page.reload()
    expect(page.locator("#attempts li.attempt")).to_have_count(2)
    expect(page.locator("#recipients")).to_contain_text("sent")
    clean(watched)


def test_cancel_withdraws_a_deferred_message_and_is_refused_for_a_sent_one(
    upstream: Upstream, ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    upstream.data_replies.append("451 4.3.0 Try again later")
    gw = ui_gateway(relay_url=upstream.url, retry={"initial_delay": 3600})
    deferred = submit(gw, subject="deferred")
    wait_for_state(gw, deferred, "deferred")
    sent = submit(gw, subject="delivered")
    wait_for_state(gw, sent, "sent")
    watched = new_page()
    page = watched.page

    page.goto(f"{gw.url}/queue/{deferred}")
    expect(page.locator("#message-status")).to_contain_text("next attempt")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#action-result")).to_have_text("cancelled")
    expect(page.locator("#message-state")).to_have_text("cancelled")
    assert wait_for_state(gw, deferred, "cancelled")["state"] == "cancelled"

    page.goto(f"{gw.url}/queue/{sent}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#action-result")).to_contain_text("cancel refused")
    expect(page.locator("#action-result")).to_contain_text("sent")
    expect(page.locator("#message-state")).to_have_text("sent")
    clean(watched)


def test_filters_narrow_the_list_and_the_cursor_pages_it(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway()  # serve mode, no relay: captured, sent
    ids = [submit(gw, subject=f"batch {i}") for i in range(5)]
    odd = submit(gw, subject="Quarterly report", to="boss@example.org")
    for mid in [*ids, odd]:
        wait_for_state(gw, mid, "sent")
    watched = new_page()
    page = watched.page
    rows = page.locator("#queue-list tbody tr")

    page.goto(f"{gw.url}/queue?limit=4")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("Quarterly report")  # newest first
    expect(page.locator('a[rel="first"]')).to_have_count(0)
    page.locator('a[rel="next"]').click()
    expect(rows).to_have_count(2)
    expect(rows.last).to_contain_text("batch 0")
    expect(page.locator('a[rel="next"]')).to_have_count(0)
    page.locator('a[rel="first"]').click()
    expect(rows).to_have_count(4)

    page.get_by_label("Text").fill("boss@EXAMPLE")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Quarterly report")
    expect(rows.first.locator(".badge")).to_have_text("sent")

    page.goto(f"{gw.url}/queue")
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#queue-empty")).to_be_visible()
    page.goto(f"{gw.url}/queue?tenant=default&q=batch")
    expect(rows).to_have_count(5)
    page.goto(f"{gw.url}/queue?tenant=another&q=batch")
    expect(rows).to_have_count(0)
    page.goto(f"{gw.url}/queue?account=no-such-account")
    expect(rows).to_have_count(0)
    clean(watched)


HTML = (
    '<p id="probe" style="color: teal">as sent</p>'
    "<script>document.getElementById('probe').textContent = 'script ran';</script>"
)


def test_the_html_part_renders_in_a_sandboxed_frame_where_its_script_does_not_run(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway()
    mid = submit(gw, subject="rich", text="the text part", html=HTML)
    wait_for_state(gw, mid, "sent")
    watched = new_page()
    page = watched.page
    page.goto(f"{gw.url}/queue/{mid}")
    expect(page.locator("#mail-text")).to_have_text("the text part")
    frame = page.locator("iframe.mail-html")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.mail-html").locator("#probe")).to_have_text("as sent")
    page.wait_for_timeout(300)  # give a script every chance to have run
    expect(page.frame_locator("iframe.mail-html").locator("#probe")).to_have_text("as sent")
    # Chromium reports the blocked script; nothing else may go wrong
    assert all("Blocked script execution" in e for e in watched.errors), watched.errors
    assert watched.csp_violations() == []

    with httpx.Client(base_url=gw.url, timeout=10) as client:
        client.get("/queue")  # a session (no credentials configured here)
        answer = client.get(f"/queue/{mid}/html")
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == (
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    )
    assert "x-frame-options" not in answer.headers
    assert "<script>" in answer.text  # served as written, made harmless by the sandbox
