"""The admin UI's security rules over plain HTTP: headers, credentials, CSRF, the
login rate limit, and the refusal to serve an open UI beyond loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.errors import ConfigError
from mailgate.threaded import GatewayThread
from tests.integration.conftest import fast_settings, fresh_postgres_database

ADMIN = ("ops", "correct horse battery")
TOKEN = "ui-token-5531"
CREDENTIALS = {"admin_user": ADMIN[0], "admin_pass": ADMIN[1]}


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_ui_pages_carry_a_strict_csp_and_frame_and_referrer_rules(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway(**CREDENTIALS)
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        pages = [http.get("/", auth=ADMIN), http.get("/settings")]  # the second: by cookie
    pages.append(httpx.get(f"{gw.url}/", timeout=10))
    assert [p.status_code for p in pages] == [200, 200, 401]
    for page in pages:
        csp = {
            d.strip().split(" ")[0]: d.strip()
            for d in page.headers["content-security-policy"].split(";")
        }
        assert csp["default-src"] == "default-src 'self'"
        assert csp["script-src"] == "script-src 'self'"  # no 'unsafe-inline', no eval
        assert csp["style-src"] == "style-src 'self'"
        assert csp["frame-ancestors"] == "frame-ancestors 'none'"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text and " on" + "click=" not in page.text
    # the JSON API keeps its own headers
    assert "content-security-policy" not in httpx.get(f"{gw.url}/healthz", timeout=30).headers


def test_static_files_are_versioned_and_cached_for_a_year(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway()
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        page = http.get("/").text
        urls = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page)
        assert {u.split("?")[0].rsplit("/", 1)[1] for u in urls} >= {
            "htmx.min.js",
            "sse.min.js",
            "mailgate.css",
        }
        for url in urls:
            assert re.search(r"\?v=[0-9a-f]{12}$", url), url
            answer = http.get(url)
            assert answer.status_code == 200
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        htmx = http.get(next(u for u in urls if "htmx.min.js" in u))
        assert htmx.headers["content-type"].startswith("text/javascript")
        assert htmx.text.startswith("/*! htmx 2.")
        assert http.get("/ui/static/nothing.js").status_code == 404


def test_the_api_token_opens_the_ui_as_bearer_basic_password_or_form(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway(api_token=TOKEN, **CREDENTIALS)
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for credentials, status in [
            ({}, 401),
            ({"headers": {"Authorization": f"Bearer {TOKEN}"}}, 200),
            ({"headers": {"X-API-Token": TOKEN}}, 200),
            ({"auth": ("anyone", TOKEN)}, 200),
            ({"headers": {"Authorization": "Bearer nope"}}, 401),
            ({"auth": (ADMIN[0], TOKEN[:-1])}, 401),
        ]:
            http.cookies.clear()
            assert http.get("/", **credentials).status_code == status, credentials  # type: ignore[arg-type]
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        login = http.post("/ui/login", data={"token": TOKEN, "next": "/accounts"})
        assert login.status_code == 303 and login.headers["location"] == "/accounts"
        assert http.get("/accounts").status_code == 200  # the session cookie alone
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        form = {"user": ADMIN[0], "password": ADMIN[1], "next": "//evil.example/"}
        login = http.post("/ui/login", data=form)
        assert login.status_code == 303 and login.headers["location"] == "/"  # no open redirect
        assert http.get("/").status_code == 200


def test_state_changes_need_the_token_and_the_same_origin(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway(**CREDENTIALS)
    with httpx.Client(base_url=gw.url, timeout=10, auth=ADMIN) as http:
        token = _csrf(http.get("/"))
        assert http.cookies.get("mailgate_ui")
        assert http.post("/ui/logout").status_code == 403
        assert http.post("/ui/logout", headers={"X-CSRF-Token": token + "x"}).status_code == 403
        cross_site = {"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
        assert http.post("/ui/logout", headers=cross_site).status_code == 403
        other_origin = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
        assert http.post("/ui/logout", headers=other_origin).status_code == 403
        # a cross-site login post (login CSRF) is refused before the credentials count
        form = {"user": ADMIN[0], "password": ADMIN[1]}
        refused = http.post("/ui/login", data=form, headers={"Sec-Fetch-Site": "cross-site"})
        assert refused.status_code == 403
        # the token as a form field, from this origin: accepted
        own = {"Origin": gw.url, "Sec-Fetch-Site": "same-origin"}
        accepted = http.post("/ui/logout", data={"csrf_token": token}, headers=own)
        assert accepted.status_code == 303


def test_a_session_from_another_gateway_or_a_forged_cookie_is_not_accepted(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway(**CREDENTIALS)
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        http.get("/", auth=ADMIN)
        cookie = http.cookies["mailgate_ui"]
        assert http.get("/").status_code == 200
        sid, issued, signature = cookie.split(".")
        for forged in (f"{sid}x.{issued}.{signature}", f"{sid}.{int(issued) - 1}.{signature}"):
            http.cookies.clear()
            http.cookies.set("mailgate_ui", forged)
            assert http.get("/").status_code == 401


def test_failed_logins_are_rate_limited_per_client(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway(**CREDENTIALS)
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for _ in range(5):
            assert http.get("/", auth=(ADMIN[0], "guess")).status_code == 401
        throttled = http.get("/", auth=ADMIN)  # even the right password, now
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 0
        form = {"user": ADMIN[0], "password": ADMIN[1]}
        assert http.post("/ui/login", data=form).status_code == 429
        # the API is not the UI's: its own answer to the admin's credentials, unthrottled
        assert http.get("/api/v1/messages", auth=ADMIN).status_code == 200
        assert http.get("/api/v1/messages").status_code == 401


def test_with_no_credentials_on_loopback_the_ui_is_open(
    ui_gateway: Callable[..., GatewayThread],
) -> None:
    gw = ui_gateway()
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200 and http.cookies.get("mailgate_ui")
        # still CSRF-checked: the dev UI must not be driven by another site
        assert http.post("/ui/logout").status_code == 403
        assert http.post("/ui/logout", headers={"X-CSRF-Token": _csrf(page)}).status_code == 303


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
async def test_an_open_ui_beyond_loopback_refuses_to_start(db_url: str, host: str) -> None:
    settings = fast_settings(db_url, http={"host": host, "port": 0})
    with pytest.raises(ConfigError, match="admin UI") as refused:
        async with Gateway(settings, mode=Mode.SERVE):
            pass
    assert "MAILGATE_API_TOKEN" in str(refused.value)


async def test_an_admin_user_without_a_password_refuses_to_start(db_url: str) -> None:
    with pytest.raises(ConfigError, match="MAILGATE_ADMIN_PASS"):
        async with Gateway(fast_settings(db_url, admin_user="ops"), mode=Mode.SERVE):
            pass


def test_admin_credentials_come_from_mailgate_and_legacy_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailgate.settings import Settings

    monkeypatch.setenv("ADMIN_USER", "legacy")
    monkeypatch.setenv("ADMIN_PASS", "legacy-pass")
    legacy = Settings()
    assert legacy.admin_user == "legacy" and legacy.admin_pass is not None
    assert legacy.admin_pass.get_secret_value() == "legacy-pass"
    monkeypatch.setenv("MAILGATE_ADMIN_USER", "ops")
    monkeypatch.setenv("MAILGATE_ADMIN_PASS", "ops-pass")
    ours = Settings()  # a mailgate name wins over the old agent's
    assert ours.admin_user == "ops" and ours.admin_pass is not None
    assert ours.admin_pass.get_secret_value() == "ops-pass"


def test_a_database_password_given_as_a_url_parameter_is_masked(postgres_url: str) -> None:
    """libpq's URIs (and asyncpg's, through SQLAlchemy) take the password as a query
    parameter too: ``postgresql://mailgate@db/mailgate?password=…`` logs in (checked
    against a scram-sha-256 server). The settings page, the settings API and the
    database URL the CLI prints showed that one in clear."""
    from mailgate.store.database import redact_url

    secret = "Leak-Pg-Query-Pw-8"  # the test cluster trusts: the driver sends it unread
    database = asyncio.run(fresh_postgres_database(postgres_url, "ui_url_password"))
    db_url = f"{database}?password={secret}"
    gateway = Gateway(fast_settings(db_url, api_token=TOKEN), mode=Mode.SERVE)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with GatewayThread(gateway) as gw, httpx.Client(base_url=gw.url, headers=bearer) as http:
        page = http.get("/settings")
        api = http.get("/api/v1/settings")
    assert page.status_code == 200 and api.status_code == 200
    assert "?password=**********" in page.text
    assert api.json()["boot"]["db_url"].endswith("/ui_url_password?password=**********")
    for shown in (page.text, api.text, redact_url(db_url)):
        assert secret not in shown
