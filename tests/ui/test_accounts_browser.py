"""The accounts pages in headless Chromium, against a real aiosmtpd upstream that
requires STARTTLS and AUTH: an account is created, tested (every step OK), enabled
(the switch was disabled until then) and a test email arrives; a wrong password fails
the AUTH step and leaves the switch disabled; the password is never in the page; a
forged enable is refused; refused fields are shown next to the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from mailgate.crypto import generate_key
from mailgate.threaded import GatewayThread
from tests.accounts_peers import PASSWORD
from tests.peers import Upstream
from tests.tls import server_context
from tests.ui.conftest import Watched

WRONG = "Wrong-Pa55word-0c1d"
STEPS = ("connect", "ehlo", "tls", "ehlo-2", "auth", "noop", "quit")


@pytest.fixture
def started(
    ui_gateway: Callable[..., GatewayThread], tmp_path: Path
) -> Iterator[tuple[GatewayThread, Upstream]]:
    """A gateway with a secret key (passwords are stored encrypted) and, in its event
    loop, an upstream that wants STARTTLS and then AUTH as ``agent``."""
    gw = ui_gateway(secret_key=generate_key())
    up = Upstream(
        tls="starttls", credentials={"agent": PASSWORD}, ssl_context=server_context(tmp_path)
    )
    gw.call(up.__aenter__())
    try:
        yield gw, up
    finally:
        gw.call(up.__aexit__(None, None, None))


def create(page: Page, gw: GatewayThread, up: Upstream, account: str, password: str) -> None:
    page.goto(gw.url + "/accounts")
    page.get_by_label("Account id", exact=True).fill(account)
    page.get_by_label("May send as", exact=True).fill(f"{account}@example.com")
    page.get_by_label("Host", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(up.port))
    page.get_by_label("Security", exact=True).select_option("starttls")
    page.get_by_label("Username", exact=True).fill("agent")
    page.get_by_label("Password", exact=True).fill(password)
    # the upstream's certificate is a self-signed test one
    page.get_by_label("Check the server's certificate", exact=True).uncheck()
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{gw.url}/accounts/{account}")


def assert_no_secret(page: Page, *secrets: str) -> None:
    html = page.content()
    for secret in secrets:
        assert secret not in html
    expect(page.locator("#f-smtp_password")).to_have_value("")
    expect(page.locator("#f-smtp_password")).to_have_attribute("placeholder", "unchanged")


def test_an_account_is_created_tested_enabled_and_a_test_email_arrives(
    started: tuple[GatewayThread, Upstream], new_page: Callable[..., Watched]
) -> None:
    gw, up = started
    watched = new_page()
    page = watched.page
    create(page, gw, up, "agent1", PASSWORD)
    assert_no_secret(page, PASSWORD)
    switch = page.get_by_role("switch")
    expect(switch).to_be_disabled()
    expect(switch).to_have_attribute("aria-checked", "false")

    page.get_by_role("button", name="Test the connection").click()
    expect(page.locator("#test-outcome")).to_have_text("The test passed.")
    for step in STEPS:
        expect(page.locator(f"#step-{step} td.result")).to_have_text("OK")
    expect(page.locator("#step-auth td.reply")).to_contain_text("235")
    expect(page.locator("#step-noop td.num")).to_contain_text("ms")
    assert up.logins == ["agent"]
    expect(switch).to_be_enabled()
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")
    expect(switch).to_have_text("Outbound enabled")

    # saving with the password field empty keeps the stored one: still enabled, still works
    page.get_by_label("Per minute", exact=True).fill("60")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_have_text("Saved.")
    expect(switch).to_have_attribute("aria-checked", "true")
    assert_no_secret(page, PASSWORD)

    page.get_by_label("To", exact=True).fill("ann@example.net")
    page.get_by_role("button", name="Send through agent1").click()
    expect(page.locator("#sent-id")).to_have_count(1)
    expect(page.locator("#sent-state")).to_have_text("sent", timeout=15_000)
    received = gw.call(up.wait_for(1))
    assert received[0].rcpt_tos == ["ann@example.net"]
    assert received[0].mail_from == "agent1@example.com"
    assert received[0].message["Subject"] == "mailgate test email through agent1"
    assert up.logins == ["agent", "agent"]

    page.goto(gw.url + "/accounts")
    row = page.locator("#account-agent1")
    expect(row).to_contain_text("enabled")
    expect(row.locator(".health")).to_have_text("ok")
    assert PASSWORD not in page.content()
    assert watched.errors == []
    assert watched.csp_violations() == []


def test_a_wrong_password_fails_auth_visibly_and_the_switch_stays_disabled(
    started: tuple[GatewayThread, Upstream], new_page: Callable[..., Watched]
) -> None:
    gw, up = started
    watched = new_page()
    page = watched.page
    create(page, gw, up, "agent2", WRONG)
    page.get_by_role("button", name="Test the connection").click()
    expect(page.locator("#test-outcome")).to_contain_text("The test failed: auth: 535")
    for step in ("connect", "ehlo", "tls"):
        expect(page.locator(f"#step-{step} td.result")).to_have_text("OK")
    expect(page.locator("#step-auth td.result")).to_have_text("FAILED")
    expect(page.locator("#step-auth td.reply")).to_contain_text("535")
    expect(page.locator("#step-noop")).to_have_count(0)
    expect(page.get_by_role("switch")).to_be_disabled()
    expect(page.locator("#health")).to_have_text("failing")
    assert_no_secret(page, WRONG)

    # the right password, typed into the write-only field: a new test passes
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#saved")).to_contain_text("run the test again")
    expect(page.get_by_role("switch")).to_be_disabled()
    page.get_by_role("button", name="Test the connection").click()
    expect(page.locator("#test-outcome")).to_have_text("The test passed.")
    expect(page.get_by_role("switch")).to_be_enabled()
    assert_no_secret(page, WRONG, PASSWORD)
    assert watched.errors == []
    assert watched.csp_violations() == []


def test_a_forged_enable_of_an_untested_account_is_refused_with_the_reason(
    started: tuple[GatewayThread, Upstream], new_page: Callable[..., Watched]
) -> None:
    gw, up = started
    watched = new_page()
    page = watched.page
    create(page, gw, up, "agent3", PASSWORD)
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert csrf
    forged = page.request.post(
        f"{gw.url}/accounts/agent3/enable", form={"csrf_token": csrf, "enabled": "1"}
    )
    assert forged.status == 409
    assert "has not passed a connection test" in forged.text()

    # the disabled switch switched back on in the page and clicked: refused, shown why
    page.locator("#enable-switch").evaluate("b => b.removeAttribute('disabled')")
    page.locator("#enable-switch").click()
    expect(page.locator("#enable-refused")).to_contain_text("has not passed a connection test")
    page.reload()
    expect(page.get_by_role("switch")).to_have_attribute("aria-checked", "false")
    expect(page.get_by_role("switch")).to_be_disabled()
    assert watched.errors == []
    assert watched.csp_violations() == []


def test_refused_fields_are_shown_next_to_the_field_and_the_password_is_not_echoed(
    started: tuple[GatewayThread, Upstream], new_page: Callable[..., Watched]
) -> None:
    gw, _ = started
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/accounts")
    page.get_by_label("Account id", exact=True).fill("bad id!")
    page.get_by_label("Host", exact=True).fill("smtp.example.com")
    page.get_by_label("Port", exact=True).fill("twenty-five")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#err-id")).to_contain_text("should match pattern")
    expect(page.locator("#err-smtp_port")).to_contain_text("must be an integer")
    expect(page.locator("#f-smtp_port")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-smtp_port")).to_have_value("twenty-five")  # kept as typed
    expect(page.locator("#f-smtp_host")).to_have_value("smtp.example.com")
    expect(page.locator("#f-smtp_password")).to_have_value("")
    assert PASSWORD not in page.content()
    expect(page.locator("#accounts")).to_have_count(0)  # nothing was stored
    # the form comes back as 422 (Chromium logs that status), and nothing else went wrong
    assert [e for e in watched.errors if "status of 422" not in e] == []
    assert watched.csp_violations() == []
