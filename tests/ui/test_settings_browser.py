"""The settings page in headless Chromium: a runtime setting changed in the page is in
force at once and after a restart on the same database, a wrong value is shown next to
its field and changes nothing, reset goes back to the configured default, secrets are
never in the page, and the Firestore poll interval changed in the page is what the next
poll follows (the official emulator)."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from playwright.sync_api import Page, expect

from mailgate.app import Gateway, Mode
from mailgate.settings import Settings
from mailgate.threaded import GatewayThread
from mailgate.ui.settings_form import boot_rows
from tests.firestore_peer import Emulator
from tests.integration.conftest import fast_settings
from tests.ui.conftest import Watched

TOKEN = "api-token-Secret-7Hq2"
RELAY_PASSWORD = "relay-Secret-pw-93kd"
ADMIN_PASS = "admin-Secret-pass-5Vb1"
SMTP_USER_PASSWORD = "smtp-user-Secret-8Lm4"


def _send(gw: GatewayThread, subject: str) -> None:
    assert gw.gateway.smtp_address is not None
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", subject
    msg.set_content("x")
    with smtplib.SMTP(*gw.gateway.smtp_address, timeout=10) as client:
        client.send_message(msg)


def _api(gw: GatewayThread, path: str) -> Any:
    response = httpx.get(f"{gw.url}/api/v1{path}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _subjects(gw: GatewayThread) -> list[str]:
    items = _api(gw, "/inbox?limit=100")["items"]
    return sorted(item["subject"] for item in items)


def _open(watched: Watched, gw: GatewayThread) -> Page:
    response = watched.page.goto(gw.url + "/settings")
    assert response is not None and response.status == 200
    watched.page.wait_for_function("window.htmx && htmx.version.startsWith('2.')")
    return watched.page


def _row(page: Page, name: str) -> Any:
    return page.locator(f'.setting[data-setting="{name}"]')


def _apply(page: Page, group: str, values: dict[str, str]) -> None:
    for name, value in values.items():
        page.locator(f'[name="{name}"]').fill(value)
    page.locator(f"#settings-{group}").get_by_role("button", name="Apply").click()


def _clean(watched: Watched) -> None:
    assert watched.errors == []
    assert watched.csp_violations() == []


def test_inbox_max_messages_applies_at_once_and_outlives_a_restart(
    db_url: str, new_page: Callable[..., Watched]
) -> None:
    settings = fast_settings(db_url)
    with GatewayThread(Gateway(settings, mode=Mode.DEV)) as gw:
        watched = new_page()
        page = _open(watched, gw)
        expect(_row(page, "inbox.max_messages")).not_to_have_class("setting changed")
        _apply(page, "retention", {"inbox.max_messages": "2"})
        status = page.locator("#settings-retention [role=status]")
        expect(status).to_have_text("Applied at once: inbox.max_messages = 2.")
        expect(_row(page, "inbox.max_messages")).to_have_class("setting changed")
        expect(_row(page, "retention.days")).to_have_class("setting")  # not pinned
        for i in range(3):
            _send(gw, f"m{i}")
        assert _subjects(gw) == ["m1", "m2"]  # the newest 2, without a restart
        assert _api(gw, "/settings")["changed"] == ["inbox.max_messages"]
        _clean(watched)

    with GatewayThread(Gateway(settings, mode=Mode.DEV)) as gw:  # the same database
        watched = new_page()
        page = _open(watched, gw)
        expect(page.locator('[name="inbox.max_messages"]')).to_have_value("2")
        expect(_row(page, "inbox.max_messages")).to_have_class("setting changed")
        expect(_row(page, "inbox.max_messages").locator(".badge")).to_have_text("changed")
        _send(gw, "m3")
        assert _subjects(gw) == ["m2", "m3"]

        _row(page, "inbox.max_messages").get_by_role("button", name="reset to default").click()
        expect(page.locator("#settings-retention [role=status]")).to_contain_text(
            "inbox.max_messages is back to its configured default (1000)"
        )
        expect(page.locator('[name="inbox.max_messages"]')).to_have_value("1000")
        expect(_row(page, "inbox.max_messages")).not_to_have_class("setting changed")
        assert _api(gw, "/settings")["changed"] == []
        _send(gw, "m4")
        assert _subjects(gw) == ["m2", "m3", "m4"]
        _clean(watched)


def test_a_wrong_value_is_shown_next_to_its_field_and_changes_nothing(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    watched = new_page()
    page = _open(watched, gw)

    _apply(page, "retention", {"retention.days": "3", "inbox.max_messages": "-1"})
    error = page.locator("#f-inbox-max_messages-error")
    expect(error).to_contain_text("greater than or equal to 0")
    expect(page.locator('[name="inbox.max_messages"]')).to_have_attribute("aria-invalid", "true")
    expect(page.locator('[name="inbox.max_messages"]')).to_have_value("-1")  # kept to correct
    expect(page.locator("#settings-retention [role=status]")).to_have_count(0)

    _apply(page, "chaos", {"smtp.chaos.rcpt.code": "250", "smtp.chaos.rcpt.probability": "50"})
    expect(page.locator("#f-smtp-chaos-rcpt-code-error")).to_contain_text(
        "greater than or equal to 400"
    )
    expect(page.locator("#f-smtp-chaos-rcpt-probability-error")).to_have_count(0)

    _apply(page, "retry", {"retry.max_attempts": "1.5"})
    expect(page.locator("#f-retry-max_attempts-error")).to_have_text("a whole number")

    body = _api(gw, "/settings")
    assert body["changed"] == []
    assert body["runtime"]["retention.days"] == 7 and body["runtime"]["inbox.max_messages"] == 1000
    assert _api(gw, "/chaos")["rcpt"]["probability"] == 0
    assert gw.gateway.dispatcher.retry.max_attempts == 10

    # corrected in place, the same form applies
    _apply(page, "chaos", {"smtp.chaos.rcpt.code": "452"})
    expect(page.locator("#settings-chaos [role=status]")).to_contain_text("rcpt 452 at 50 %")
    assert _api(gw, "/chaos")["rcpt"] == {"code": 452, "probability": 50}
    page.get_by_role("button", name="reset smtp.chaos to default").click()
    expect(page.locator("#settings-chaos [role=status]")).to_contain_text("back to its")
    assert _api(gw, "/chaos")["rcpt"]["probability"] == 0
    assert _api(gw, "/settings")["changed"] == []
    _clean(watched)


def test_log_level_and_retry_change_from_the_page(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    watched = new_page()
    page = _open(watched, gw)
    page.locator('[name="log_level"]').select_option("DEBUG")
    page.locator("#settings-logging").get_by_role("button", name="Apply").click()
    expect(page.locator("#settings-logging [role=status]")).to_contain_text("log_level = DEBUG")
    _apply(page, "retry", {"retry.initial_delay": "7.5"})
    expect(page.locator("#settings-retry [role=status]")).to_contain_text(
        "retry.initial_delay = 7.5"
    )
    assert gw.gateway.dispatcher.retry.initial_delay == 7.5
    # typing the configured value back forgets the change, as reset does
    _apply(page, "retry", {"retry.initial_delay": "0.2"})
    expect(page.locator("#settings-retry [role=status]")).to_contain_text(
        "retry.initial_delay back to its default"
    )
    assert _api(gw, "/settings")["changed"] == ["log_level"]
    assert gw.gateway.dispatcher.retry.initial_delay == 0.2
    _row(page, "log_level").get_by_role("button", name="reset to default").click()
    expect(page.locator("#settings-logging [role=status]")).to_contain_text("back to its")
    assert _api(gw, "/settings")["changed"] == []
    _clean(watched)


def test_no_secret_is_ever_in_the_page(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(
        Mode.SERVE,
        api_token=TOKEN,
        relay_url=f"smtp://relay-user:{RELAY_PASSWORD}@127.0.0.1:9/",
        admin_user="admin",
        admin_pass=ADMIN_PASS,
        smtp={"users": {"app": SMTP_USER_PASSWORD}},
    )
    secrets = (TOKEN, RELAY_PASSWORD, ADMIN_PASS, SMTP_USER_PASSWORD)
    watched = new_page(http_credentials={"username": "admin", "password": ADMIN_PASS})
    page = _open(watched, gw)
    page.locator("#settings-boot summary").click()
    boot = page.locator("#settings-boot")
    expect(boot.locator("tr", has=page.locator("code", has_text="api_token"))).to_contain_text(
        "**********"
    )
    expect(boot).to_contain_text("relay_url")
    expect(boot).to_contain_text("admin_user")
    _apply(page, "retention", {"inbox.max_messages": "5"})
    expect(page.locator("#settings-retention [role=status]")).to_be_visible()
    _apply(page, "retry", {"retry.jitter": "7"})  # an error answer too
    expect(page.locator("#f-retry-jitter-error")).to_be_visible()
    pages = [page.content()]
    auth = httpx.BasicAuth("admin", ADMIN_PASS)
    pages.append(httpx.get(gw.url + "/settings", auth=auth, timeout=10).text)
    for html in pages:
        assert "**********" in html
        for secret in secrets:
            assert secret not in html
    _clean(watched)


def test_a_password_in_a_plain_url_setting_is_masked_too() -> None:
    settings = Settings(db_url="postgresql://mailgate:pg-Secret-41@db.internal:5432/mailgate")
    rows = dict(boot_rows(settings))
    assert rows["db_url"] == "postgresql://mailgate:**********@db.internal:5432/mailgate"
    assert "inbox.max_messages" not in rows and "smtp.chaos.rcpt.code" not in rows
    assert rows["inbox.sort_by"] == "none"


def test_poll_now_without_a_firestore_source_says_so(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    watched = new_page()
    page = _open(watched, gw)
    page.get_by_role("button", name="Poll Firestore now").click()
    expect(page.locator("#poll-outcome")).to_contain_text("No Firestore source is watched here")
    _clean(watched)


# --- Firestore: the official emulator (shared/PEERS.md) ---------------------------------


@pytest.fixture
def firestore_sync(
    firestore_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[firestore.Client]:
    """An empty emulator database, the environment pointing at it (the gateway's client
    reads it), and a synchronous client: the browser tests run outside an event loop."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", firestore_emulator.project)
    firestore_emulator.reset()
    client = firestore.Client(
        project=firestore_emulator.project, credentials=AnonymousCredentials()
    )
    yield client
    client.close()  # type: ignore[no-untyped-call]  # untyped in google-cloud-firestore


def _state_of(client: firestore.Client, path: str, limit: float) -> str | None:
    """The document's ``state`` once SENT, or the last seen when ``limit`` ran out."""
    deadline = time.monotonic() + limit
    state = None
    while time.monotonic() < deadline:
        state = (client.document(path).get().to_dict() or {}).get("state")
        if state == "SENT":
            break
        time.sleep(0.1)
    return state


def _document(subject: str) -> dict[str, Any]:
    return {"to": "p@example.com", "subject": subject, "message": {"html": "<p>x</p>"},
            "delivery": None}  # fmt: skip


def test_the_poll_interval_changed_in_the_page_is_followed_by_the_next_poll(
    ui_gateway: Callable[..., GatewayThread],
    new_page: Callable[..., Watched],
    firestore_emulator: Emulator,
    firestore_sync: firestore.Client,
) -> None:
    hourly = {"enabled": True, "project_id": firestore_emulator.project, "listen": False,
              "poll_interval": 3600, "contract": "simple", "lease_seconds": 5}  # fmt: skip
    gw = ui_gateway(Mode.SERVE, firestore=hourly)
    source = gw.gateway.firestore
    assert source is not None
    deadline = time.monotonic() + 20
    while source.stats.last_poll_at is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the poll at start-up is over before the first write
    assert source.stats.last_poll_at is not None
    watched = new_page()
    page = _open(watched, gw)

    firestore_sync.collection("mail").document("d1").set(_document("one"))
    assert _state_of(firestore_sync, "mail/d1", 1.0) != "SENT"  # no listener, an hour away
    page.get_by_role("button", name="Poll Firestore now").click()
    expect(page.locator("#poll-outcome")).to_have_text(
        "Polled: 1 document found, 1 queued, 0 errors."
    )
    assert _state_of(firestore_sync, "mail/d1", 20) == "SENT"

    _apply(page, "firestore", {"firestore.poll_interval": "0.2"})
    expect(page.locator("#settings-firestore [role=status]")).to_have_text(
        "Applied at once: firestore.poll_interval = 0.2."
    )
    expect(_row(page, "firestore.poll_interval")).to_have_class("setting changed")
    assert source.poll_interval == 0.2
    # no further action: the hour-long wait under way gives way to the new interval
    firestore_sync.collection("mail").document("d2").set(_document("two"))
    assert _state_of(firestore_sync, "mail/d2", 10) == "SENT"
    _clean(watched)
