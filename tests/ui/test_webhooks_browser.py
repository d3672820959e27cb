"""The webhooks page in headless Chromium: an endpoint created in the page appears with
its kinds, receives an event (a real HTTP receiver) whose delivery the page lists, is
disabled, enabled and deleted; its signing secret is never in the page, not even
after a refused form."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from playwright.sync_api import expect

from mailgate.crypto import generate_key
from mailgate.threaded import GatewayThread
from tests.http_peer import Receiver
from tests.ui.conftest import Watched

SECRET = "whsec-typed-in-the-page-0123456789"
MESSAGE = {"to": "a@example.com", "subject": "hook me", "text": "x"}
FAST = {"poll_interval": 0.05, "retry_delays": [0.2], "jitter": 0.0, "timeout": 2.0}


def _until_recorded(gw: GatewayThread, limit: float = 10.0) -> None:
    """Until the (only) endpoint's first attempt is in the store."""
    deadline = time.monotonic() + limit
    with httpx.Client(base_url=gw.url + "/api/v1", timeout=10) as api:
        [hook] = api.get("/webhooks").json()["webhooks"]
        while not api.get(f"/webhooks/{hook['id']}/deliveries").json()["attempts"]:
            assert time.monotonic() < deadline, "no attempt recorded"
            time.sleep(0.05)


def test_an_endpoint_is_created_used_switched_and_deleted_without_showing_its_secret(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(secret_key=generate_key(), webhooks={**FAST, "allow_private_networks": True})
    rx = Receiver()
    gw.call(rx.__aenter__())
    try:
        watched = new_page()
        page = watched.page
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(gw.url + "/webhooks")
        expect(page.locator("#webhooks-none")).to_be_visible()

        # refused by the server: the secret typed in is not sent back
        page.get_by_label("URL").fill("ftp://example.com/hook")
        page.get_by_label("Signing secret").fill(SECRET)
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("#webhook-result")).to_contain_text("url")
        assert SECRET not in page.content()
        expect(page.get_by_label("Signing secret")).to_have_value("")

        page.get_by_label("URL").fill(rx.url)
        page.get_by_label("Signing secret").fill(SECRET)
        page.get_by_label("message.sent").check()
        page.get_by_role("button", name="Add endpoint").click()
        expect(page.locator("#webhook-result")).to_have_text(f"Added {rx.url}.")
        row = page.locator("#webhooks tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text(rx.url)
        expect(row).to_contain_text("message.sent")
        expect(row).to_contain_text("enabled")
        assert SECRET not in page.content()

        sent = httpx.post(gw.url + "/api/v1/messages", json=MESSAGE, timeout=10)
        assert sent.status_code == 202, sent.text
        gw.call(rx.wait_for(1))
        _until_recorded(gw)  # the receiver has the request before the attempt is recorded
        page.reload()
        expect(row).to_contain_text("delivered")
        page.get_by_role("button", name="Deliveries").click()
        deliveries = page.locator("#webhook-deliveries tbody tr")
        expect(deliveries).to_have_count(1)
        expect(deliveries).to_contain_text("message.sent")
        expect(deliveries).to_contain_text("200")
        assert SECRET not in page.content()

        page.get_by_role("button", name="Disable").click()
        expect(page.locator("#webhook-result")).to_have_text("Disabled.")
        expect(row).to_contain_text("disabled")
        page.get_by_role("button", name="Enable").click()
        expect(page.locator("#webhook-result")).to_have_text("Enabled.")
        expect(row).to_contain_text("enabled")
        page.get_by_role("button", name="Delete").click()
        expect(page.locator("#webhook-result")).to_have_text("Deleted.")
        expect(page.locator("#webhooks-none")).to_be_visible()
        assert httpx.get(gw.url + "/api/v1/webhooks", timeout=30).json() == {"webhooks": []}
        assert watched.errors == []
        assert watched.csp_violations() == []
    finally:
        gw.call(rx.__aexit__(None, None, None))
