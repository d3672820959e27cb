"""With the admin UI's user and password set and no API token (issue 11), the API and
the Mailpit API refuse anonymous requests; the admin's Basic credentials open them, as
a per-tenant token still opens its tenant's part."""

from __future__ import annotations

import httpx

from mailgate.app import Mode
from mailgate.clock import SystemClock
from mailgate.store import TokenStore
from tests.integration.conftest import GatewayFactory

ADMIN = ("ops", "admin-pass-Hq52")


async def test_the_admin_user_opens_the_api_and_nobody_else_does(
    start_gateway: GatewayFactory,
) -> None:
    async with (
        start_gateway(Mode.DEV, admin_user=ADMIN[0], admin_pass=ADMIN[1]) as gw,
        httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http,
    ):
        for path in ("/api/v1/messages", "/api/v1/inbox", "/mailpit/api/v1/messages"):
            anonymous = await http.get(path)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["www-authenticate"].startswith("Basic"), path
            assert (await http.get(path, auth=ADMIN)).status_code == 200, path
            wrong = await http.get(path, auth=(ADMIN[0], "not-it"))
            assert wrong.status_code == 401, path
            other_user = await http.get(path, auth=("someone", ADMIN[1]))
            assert other_user.status_code == 401, path
        assert "admin user" in (await http.get("/api/v1/messages")).text
        assert (await http.get("/metrics", auth=ADMIN)).status_code == 200  # the admin's
        assert (await http.get("/healthz")).status_code == 200  # health stays open

        _, token = await TokenStore(gw.accounts.db, SystemClock()).create("acme", "t")
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/v1/messages", headers=bearer)).status_code == 200
        assert (await http.get("/metrics", headers=bearer)).status_code == 403  # a tenant
