"""The inbox pages in headless Chromium: mail sent over SMTP shows up live, captured
HTML never runs script in the UI's origin and loads nothing remote until asked, and
attachments, search, deleting and the inbox switcher work as a user meets them."""

from __future__ import annotations

import os
import smtplib
from collections.abc import Callable
from email.message import EmailMessage

import httpx
from playwright.sync_api import Page, expect

from mailgate.app import Mode
from mailgate.threaded import GatewayThread
from tests.content_peers import FileServer
from tests.ui.conftest import Watched

SSE_OPEN = (
    "document.querySelector('[sse-connect]')['htmx-internal-data']?.sseEventSource"
    "?.readyState === 1"
)


def _mail(subject: str, *, html: str | None = None, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "you@example.com"
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(f"the text of {subject}\n")
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def _send(gw: GatewayThread, message: EmailMessage, login: tuple[str, str] | None = None) -> None:
    assert gw.gateway.smtp_address is not None
    with smtplib.SMTP(*gw.gateway.smtp_address, timeout=10) as smtp:
        if login is not None:  # PLAIN: smtplib's choice, CRAM-MD5, sends no password
            smtp.user, smtp.password = login
            smtp.ehlo()
            smtp.auth("PLAIN", smtp.auth_plain)
        smtp.send_message(message)


def _only_id(gw: GatewayThread) -> str:
    answer = httpx.get(gw.url + "/api/v1/inbox", timeout=10).json()
    [item] = answer["items"]
    return str(item["id"])


#: the mail frame's image policy, as Chromium quotes it refusing an image
FRAME_CSP = '"img-src data: cid:"'


def _clean(watched: Watched) -> list[str]:
    """No console error nor CSP violation of the UI's page; the mail frame's refusals
    to run script (Chromium logs them to the same console) are returned."""
    blocked = [e for e in watched.errors if "frame is sandboxed" in e or FRAME_CSP in e]
    assert [e for e in watched.errors if e not in blocked] == []
    assert watched.csp_violations() == []
    return blocked


def _subjects(page: Page) -> list[str]:
    return page.locator("#inbox-rows tr.msg td.subject a").all_inner_texts()


def test_mail_sent_over_smtp_appears_in_the_open_list_without_a_reload(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/inbox")
    expect(page.locator("#inbox-rows")).to_contain_text("No mail here yet")
    page.wait_for_function(SSE_OPEN)
    page.evaluate("window.__same_document = true")  # gone if the page reloads

    _send(gw, _mail("live one", X_Tags="billing"))
    row = page.locator("#inbox-rows tr.msg")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row.locator("td.subject a")).to_have_text("live one")
    expect(row).to_have_class("msg unread")  # bold until opened
    expect(row.locator(".tag")).to_have_text("billing")
    expect(page.locator("#inbox-boxes")).to_contain_text("1 new")

    _send(gw, _mail("live two"))
    expect(page.locator("#inbox-rows tr.msg td.subject a")).to_have_text(
        ["live two", "live one"], timeout=10_000
    )  # newest first
    assert page.evaluate("window.__same_document") is True

    page.get_by_role("link", name="live one").click()
    expect(page.locator("#msg-subject")).to_have_text("live one")
    page.go_back()
    page.reload()
    expect(page.locator("#inbox-rows tr.msg").last).to_have_class("msg")  # read now
    _clean(watched)


SCRIPTED = """<html><head><title>x</title></head><body>
<p id="hello">Hello from the mail</p>
<script>document.body.setAttribute('data-ran', 'yes');
try { parent.document.title = 'pwned'; } catch (e) {}
try { top.__pwned = true; } catch (e) {}</script>
<img src="x" onerror="parent.document.title = 'pwned-too'">
</body></html>"""


def test_the_html_tab_renders_in_a_sandbox_where_the_mails_script_does_not_run(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    _send(gw, _mail("scripted", html=SCRIPTED))
    capture_id = _only_id(gw)
    watched = new_page()
    page = watched.page
    page.goto(f"{gw.url}/inbox/{capture_id}")
    title = page.title()

    frame = page.locator("iframe#mail-html")
    assert frame.get_attribute("sandbox") == ""  # no allow-scripts, no allow-same-origin
    expect(page.frame_locator("iframe#mail-html").locator("#hello")).to_have_text(
        "Hello from the mail"
    )
    mail_frame = page.frame(name="mail-html")
    assert mail_frame is not None
    mail_frame.wait_for_load_state("load")
    assert mail_frame.locator("body").get_attribute("data-ran") is None
    assert page.title() == title
    assert page.evaluate("window.__pwned === undefined")

    served = httpx.get(f"{gw.url}/inbox/{capture_id}/html", timeout=10)
    policy = served.headers["content-security-policy"]
    assert policy.startswith("sandbox;") and "script-src" not in policy
    assert "default-src 'none'" in policy
    assert served.headers["x-content-type-options"] == "nosniff"
    assert _clean(watched)  # the script was there, and refused


def test_remote_images_are_not_requested_until_the_user_allows_them(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    with FileServer() as pixels:
        html = f'<p id="hello">pixel below</p><img alt="pixel" src="{pixels.url("/file/43")}">'
        _send(gw, _mail("tracked", html=html))
        watched = new_page()
        page = watched.page
        page.goto(f"{gw.url}/inbox/{_only_id(gw)}")
        mail_frame = page.frame(name="mail-html")
        assert mail_frame is not None
        expect(mail_frame.locator("#hello")).to_have_text("pixel below")
        mail_frame.wait_for_load_state("load")  # after every image it was allowed
        assert pixels.hosts == []

        page.locator("#load-remote").click()
        page.wait_for_function("1", polling=100)  # let the frame navigate
        mail_frame = page.frame(name="mail-html")
        assert mail_frame is not None
        expect(mail_frame.locator("#hello")).to_have_text("pixel below")
        mail_frame.wait_for_load_state("load")
        assert len(pixels.hosts) == 1
        _clean(watched)


def test_an_attachment_downloads_with_identical_bytes(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    content = os.urandom(5000) + b"\r\n\x00<script>alert(1)</script>"
    message = _mail("with a file")
    message.add_attachment(
        content, maintype="application", subtype="octet-stream", filename="data.bin"
    )
    _send(gw, message)
    watched = new_page()
    page = watched.page
    page.goto(f"{gw.url}/inbox/{_only_id(gw)}?tab=attachments")
    with page.expect_download() as download:
        page.get_by_role("link", name="data.bin").click()
    assert download.value.suggested_filename == "data.bin"
    with open(download.value.path(), "rb") as saved:
        assert saved.read() == content
    link = page.get_by_role("link", name="data.bin").get_attribute("href")
    served = httpx.get(gw.url + str(link), timeout=10)
    assert served.headers["content-disposition"].startswith("attachment;")
    assert served.headers["x-content-type-options"] == "nosniff"
    _clean(watched)


def test_search_filters_the_list_and_a_bad_query_says_why(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    _send(gw, _mail("alpha report"))
    _send(gw, _mail("beta news"))
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/inbox")
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(2)
    search = page.get_by_role("searchbox")
    search.fill("subject:alpha")
    search.press("Enter")
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(1)
    assert _subjects(page) == ["alpha report"]

    answered = page.goto(gw.url + "/inbox?q=before:not-a-date")
    assert answered is not None and answered.status == 200
    expect(page.locator("#search-error")).to_contain_text("not-a-date")
    _clean(watched)


def test_delete_one_and_delete_a_search_result_after_confirming(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    for subject in ("keep me", "drop me", "old invoice", "new invoice"):
        _send(gw, _mail(subject))
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/inbox")
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(4)

    page.get_by_role("button", name="Delete drop me").click()
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(3)
    assert "drop me" not in _subjects(page)

    page.goto(gw.url + "/inbox?q=invoice")
    page.get_by_role("link", name="Delete what this search found…").click()
    expect(page.locator("#clear-count")).to_have_text("2")
    page.get_by_role("button", name="Delete 2").click()
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(1)
    assert _subjects(page) == ["keep me"]
    left = httpx.get(gw.url + "/api/v1/inbox", timeout=10).json()["items"]
    assert [m["subject"] for m in left] == ["keep me"]
    _clean(watched)


def test_the_inbox_switcher_shows_only_that_inboxs_mail(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV, inbox={"sort_by": "header"})
    _send(gw, _mail("for alpha", X_Mailgate_Inbox="alpha"))
    _send(gw, _mail("for beta", X_Mailgate_Inbox="beta"))
    _send(gw, _mail("for alpha again", X_Mailgate_Inbox="alpha"))
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/inbox")
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(3)
    page.locator('#inbox-boxes a[data-inbox="alpha"]').click()
    expect(page.locator("#inbox-rows tr.msg")).to_have_count(2)
    assert _subjects(page) == ["for alpha again", "for alpha"]
    expect(page.locator('#inbox-boxes a[data-inbox="alpha"]')).to_have_attribute(
        "aria-current", "page"
    )
    page.locator('#inbox-boxes a[data-inbox="beta"]').click()
    expect(page.locator("#inbox-rows tr.msg td.subject a")).to_have_text(["for beta"])
    _clean(watched)


def test_the_captured_auth_password_is_masked_until_revealed(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV)
    _send(gw, _mail("signed in"), login=("dev-user", "s3cret-pw-981"))
    watched = new_page()
    page = watched.page
    page.goto(f"{gw.url}/inbox/{_only_id(gw)}?tab=auth")
    expect(page.locator("#auth-username")).to_have_text("dev-user")
    expect(page.locator("#auth-mechanism")).not_to_have_text("—")
    expect(page.locator("#auth-password")).to_have_text("••••••••")
    assert "s3cret-pw-981" not in page.content()
    page.get_by_role("button", name="Reveal").click()
    expect(page.locator("#auth-password")).to_have_text("s3cret-pw-981")
    _clean(watched)


def test_tags_unread_and_release_from_the_message_page(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    # serve mode without a relay: released mail is queued, delivered to the capture
    # transport, and so comes back into this inbox
    gw = ui_gateway(Mode.SERVE, smtp={"mode": "capture"})
    _send(gw, _mail("to release"))
    capture_id = _only_id(gw)
    watched = new_page()
    page = watched.page
    page.goto(f"{gw.url}/inbox/{capture_id}?tab=text")
    expect(page.locator("#mail-text")).to_contain_text("the text of to release")

    page.locator("#msg-tags").fill("one, two")
    page.get_by_role("button", name="Save tags").click()
    expect(page.locator(".message-head .tag")).to_have_text(["one", "two"])

    page.get_by_label("Release to").fill("not an address")
    page.get_by_role("button", name="Release").click()
    expect(page.locator("#release-result")).to_contain_text("Invalid email address")
    page.get_by_label("Release to").fill("someone@example.com")
    page.get_by_role("button", name="Release").click()
    expect(page.locator("#release-result")).to_contain_text("Queued for delivery")

    page.get_by_role("button", name="Mark unread").click()
    expect(page.locator("h1")).to_have_text("Inbox")
    released = page.locator("#inbox-rows tr.msg", has_text="to release")
    expect(released).to_have_count(2, timeout=10_000)  # the copy came back
    original = page.locator(f'#inbox-rows tr.msg:has(a[href="/inbox/{capture_id}"])')
    expect(original).to_have_class("msg unread")
    expect(original.locator(".tag")).to_have_text(["one", "two"])
    _clean(watched)


def test_the_links_tab_lists_the_links_and_checks_them(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(Mode.DEV, inbox={"link_check_private": True})  # the server is local
    with FileServer() as site:
        good, gone = site.url("/status/200"), site.url("/status/404")
        html = f'<a href="{good}">fine</a> <a href="{gone}">broken</a>'
        _send(gw, _mail("links", html=html))
        watched = new_page()
        page = watched.page
        page.goto(f"{gw.url}/inbox/{_only_id(gw)}?tab=links")
        rows = page.locator("table.links tbody tr")
        expect(rows).to_have_count(2)
        assert site.hosts == []  # listing them asks nothing
        page.get_by_role("button", name="Check links").click()
        expect(rows.filter(has_text="fine").locator("td").last).to_have_text("200 OK")
        expect(rows.filter(has_text="broken").locator("td").last).to_have_text("404 Not Found")
        _clean(watched)
