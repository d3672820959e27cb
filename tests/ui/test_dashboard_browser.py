"""The dashboard in headless Chromium: it loads clean under its CSP, shows the gateway,
and follows mail as it moves without a reload."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import httpx
from playwright.sync_api import expect

from mailgate import __version__
from mailgate.app import Mode
from mailgate.threaded import GatewayThread
from tests.ui.conftest import Watched

PASSWORD = "submission-pw-4567"
RAW = b"From: app@example.com\r\nTo: you@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


def test_the_dashboard_loads_without_console_errors_or_csp_violations(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway()
    watched = new_page()
    response = watched.page.goto(gw.url + "/")
    assert response is not None and response.status == 200
    page = watched.page
    expect(page.locator("#version")).to_have_text(__version__)
    expect(page.locator("#mode")).to_have_text("serve")
    expect(page.locator("#queue-queued")).to_have_text("0")
    expect(page.locator("#queue-sent")).to_have_text("0")
    expect(page.locator("svg.chart rect.bar")).to_have_count(60)
    # htmx and its SSE extension ran (their scripts load under the CSP) and connected
    page.wait_for_function("window.htmx && htmx.version.startsWith('2.')")
    page.wait_for_function(
        "document.querySelector('[sse-connect]')['htmx-internal-data']?.sseEventSource"
        "?.readyState === 1"
    )
    for path in ("/queue", "/inbox", "/accounts", "/webhooks", "/settings"):
        page.locator("nav.pages").get_by_role("link", name=path[1:].capitalize()).click()
        expect(page).to_have_url(gw.url + path)
        current = page.locator(f'nav.pages a[href="{path}"]')
        expect(current).to_have_attribute("aria-current", "page")
    assert watched.errors == []
    assert watched.csp_violations() == []


def test_mail_sent_over_rest_and_smtp_moves_the_counts_without_a_reload(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.SERVE, smtp={"mode": "submission"})
    user = {"username": "app", "password": PASSWORD, "senders": ["@example.com"]}
    added = httpx.post(gw.url + "/api/v1/smtp-users", json=user, timeout=10)
    assert added.status_code == 201, added.text
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/")
    expect(page.locator("#queue-sent")).to_have_text("0")
    page.wait_for_function(
        "document.querySelector('[sse-connect]')['htmx-internal-data']?.sseEventSource"
        "?.readyState === 1"
    )
    page.evaluate("window.__same_document = true")  # gone if the page reloads

    message = {"to": "a@example.com", "subject": "live", "text": "x"}
    accepted = httpx.post(gw.url + "/api/v1/messages", json=message, timeout=10)
    assert accepted.status_code == 202, accepted.text
    expect(page.locator("#queue-sent")).to_have_text("1", timeout=10_000)
    expect(page.locator("#hour-sent")).to_have_text("1")

    assert gw.gateway.smtp_address is not None
    with smtplib.SMTP(*gw.gateway.smtp_address, timeout=10) as smtp:
        smtp.login("app", PASSWORD)
        smtp.sendmail("app@example.com", ["you@example.com"], RAW)
    expect(page.locator("#queue-sent")).to_have_text("2", timeout=10_000)
    expect(page.locator("#day-sent")).to_have_text("2")
    assert page.evaluate("window.__same_document") is True
    assert watched.errors == []
    assert watched.csp_violations() == []
