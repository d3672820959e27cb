"""The admin UI's failed logins are counted in the store, as SMTP AUTH's are: two
gateways on one store (two ``serve`` processes behind one load balancer) hold one limit
per client address, where each allowed its own. A logout is kept there too: the session
it ended opens nothing at any of them."""

from __future__ import annotations

import re

import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.crypto import generate_key
from mailgate.store import Database
from mailgate.store.auth_failures import AuthFailureStore
from tests.integration.conftest import drop_table, engine_url, fast_settings

ADMIN = ("admin", "a long admin password")


@pytest.fixture(params=["sqlite", "postgresql"])
async def shared_store(request: pytest.FixtureRequest, db_url: str) -> str:
    return await engine_url(request, db_url, "mailgate_ui_login_shared")


async def _status(gw: Gateway, password: str) -> int:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as http:
        return (await http.get("/", auth=(ADMIN[0], password))).status_code


async def test_failed_logins_at_one_gateway_are_refused_at_the_other(shared_store: str) -> None:
    settings = fast_settings(shared_store, admin_user=ADMIN[0], admin_pass=ADMIN[1])
    async with Gateway(settings, mode=Mode.SERVE) as one, Gateway(settings, mode=Mode.SERVE) as two:
        assert [await _status(one, "guess") for _ in range(3)] == [401] * 3
        assert [await _status(two, "guess") for _ in range(2)] == [401] * 2  # 5: the limit
        assert await _status(one, ADMIN[1]) == 429  # even the right password, at either
        assert await _status(two, ADMIN[1]) == 429
    db = Database(shared_store)
    try:
        assert await AuthFailureStore(db).count() == 5
    finally:
        await db.aclose()


async def test_a_login_is_503_when_the_failures_cannot_be_read(db_url: str) -> None:
    """No count to vouch for the guess: it is not compared (and nothing is let through)."""
    settings = fast_settings(db_url, admin_user=ADMIN[0], admin_pass=ADMIN[1])
    async with Gateway(settings, mode=Mode.SERVE) as gw:
        assert await _status(gw, ADMIN[1]) == 200
        await drop_table(db_url, "auth_failures")
        assert await _status(gw, ADMIN[1]) == 503
        assert await _status(gw, "guess") == 503


async def test_a_logout_at_one_gateway_ends_the_session_at_both(shared_store: str) -> None:
    """A session is a signed cookie that every gateway with the same secret key accepts;
    a copy of it must open nothing once its browser logged out, at any of them."""
    settings = fast_settings(
        shared_store, admin_user=ADMIN[0], admin_pass=ADMIN[1], secret_key=generate_key()
    )
    async with Gateway(settings, mode=Mode.SERVE) as one, Gateway(settings, mode=Mode.SERVE) as two:
        async with httpx.AsyncClient(base_url=one.http_url, timeout=30) as browser:
            page = await browser.get("/", auth=ADMIN)
            copied = {"mailgate_ui": browser.cookies["mailgate_ui"]}
            assert await _with_cookie(two, copied) == 200  # the same session at the other
            own = {"X-CSRF-Token": _csrf(page), "Sec-Fetch-Site": "same-origin"}
            assert (await browser.post("/ui/logout", headers=own)).status_code == 303
        assert await _with_cookie(one, copied) == 401
        assert await _with_cookie(two, copied) == 401
        async with httpx.AsyncClient(base_url=two.http_url, timeout=30) as again:
            assert (await again.get("/", auth=ADMIN)).status_code == 200  # a new login works


async def test_a_session_is_503_when_the_ended_ones_cannot_be_read(db_url: str) -> None:
    """Nothing says whether the cookie was logged out: it is not let in."""
    settings = fast_settings(db_url, admin_user=ADMIN[0], admin_pass=ADMIN[1])
    async with (
        Gateway(settings, mode=Mode.SERVE) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=30) as browser,
    ):
        assert (await browser.get("/", auth=ADMIN)).status_code == 200
        await drop_table(db_url, "ended_sessions")
        assert (await browser.get("/")).status_code == 503


async def _with_cookie(gw: Gateway, cookies: dict[str, str]) -> int:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=30, cookies=cookies) as http:
        return (await http.get("/")).status_code


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found, page.text[:500]
    return found.group(1)
