"""The admin UI's login and CSRF rules, as a browser meets them."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from mailgate.threaded import GatewayThread
from tests.ui.conftest import Watched

ADMIN = {"username": "ops", "password": "correct horse battery"}
CREDENTIALS = {"admin_user": ADMIN["username"], "admin_pass": ADMIN["password"]}


def test_with_an_admin_user_no_credentials_are_401_and_right_ones_a_strict_cookie(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(**CREDENTIALS)

    # (a page's navigation would end in Chromium's own prompt, which Playwright cancels)
    anonymous = new_page().context
    refused = anonymous.request.get(gw.url + "/")
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith("Basic ")
    assert '<form class="login"' in refused.text()
    assert anonymous.cookies() == []

    wrong = new_page(http_credentials={**ADMIN, "password": "wrong"}).context
    assert wrong.request.get(gw.url + "/").status == 401
    assert wrong.cookies() == []

    admin = new_page(http_credentials=ADMIN)
    answered = admin.page.goto(gw.url + "/")
    assert answered is not None and answered.status == 200
    expect(admin.page.locator("h1")).to_have_text("Dashboard")
    [cookie] = admin.context.cookies()
    assert cookie["name"] == "mailgate_ui"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP here; Secure over TLS
    assert admin.page.evaluate("document.cookie") == ""  # no script reads it
    assert admin.errors == []


def test_the_login_form_takes_the_api_token_and_the_cookie_carries_the_session(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(api_token="ui-token-8812")
    watched = new_page()
    page = watched.page
    page.goto(gw.url + "/queue")
    page.get_by_label("API token").fill("ui-token-8812")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Queue")  # back where the login began
    answered = page.goto(gw.url + "/")  # the cookie alone, no credentials
    assert answered is not None and answered.status == 200
    assert watched.csp_violations() == []


def test_a_state_changing_request_needs_the_pages_csrf_token(
    ui_gateway: Callable[..., GatewayThread], new_page: Callable[..., Watched]
) -> None:
    gw = ui_gateway(**CREDENTIALS)
    page = new_page(http_credentials=ADMIN).page
    page.goto(gw.url + "/")
    post = """async (token) => {
        const headers = token === null ? {} : {'X-CSRF-Token': token};
        const r = await fetch('/ui/logout', {method: 'POST', headers, redirect: 'manual'});
        return r.status;
    }"""
    assert page.evaluate(post, None) == 403
    assert page.evaluate(post, "forged-token") == 403
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token and page.evaluate(post, token) == 0  # an opaque redirect: accepted
