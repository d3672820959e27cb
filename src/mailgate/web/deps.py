"""Request dependencies: the services from lifespan state, and API token auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Query
from pydantic import SecretStr
from starlette.requests import HTTPConnection

from mailgate.http_auth import basic_credentials
from mailgate.web.services import Services

__all__ = [
    "CursorParam",
    "ServicesDep",
    "TenantDep",
    "admin_only",
    "get_services",
    "require_token",
]


def get_services(request: HTTPConnection) -> Services:
    services = request.state.services
    assert isinstance(services, Services)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def require_token(request: HTTPConnection, services: ServicesDep) -> str:
    """``Authorization: Bearer …`` or ``X-API-Token``; returns the tenant.

    The configured ``MAILGATE_API_TOKEN`` is the admin token (tenant ``default``); a
    token made with ``mailgate tokens add --tenant T`` is tenant ``T``'s. The admin
    UI's user and password (``admin_user``/``admin_pass``), as HTTP Basic credentials,
    are the admin too. With neither an admin token nor an admin user configured the
    API is open (tenant ``default``, or the tenant of a per-tenant token when one is
    given); the composition root refuses to start that way unless the web server is
    bound to loopback. A request or a WebSocket handshake.
    """
    given = _given_token(request)
    expected = services.api_token
    if given and services.tokens is not None and not _is_admin(given, expected):
        tenant = await services.tokens.tenant_of(given)
        if tenant is not None:
            return tenant
    if _is_admin_user(basic_credentials(request), services.admin):
        return "default"
    if expected is None and services.admin is None:
        return "default"
    challenge = {"WWW-Authenticate": "Bearer" if expected is not None else _BASIC}
    if not given:
        missing = "missing API token (Authorization: Bearer … or X-API-Token)"
        if expected is None:
            missing = "missing credentials: the admin user's (HTTP Basic) or an API token"
        raise HTTPException(401, missing, headers=challenge)
    if not _is_admin(given, expected):
        raise HTTPException(401, "invalid API token", headers=challenge)
    return "default"


_BASIC = 'Basic realm="mailgate", charset="UTF-8"'


def _is_admin_user(given: tuple[str, str] | None, admin: tuple[str, SecretStr] | None) -> bool:
    if given is None or admin is None:
        return False
    user_ok = secrets.compare_digest(given[0].encode(), admin[0].encode())
    password = admin[1].get_secret_value().encode()
    return secrets.compare_digest(given[1].encode(), password) and user_ok


def _given_token(request: HTTPConnection) -> str | None:
    given = request.headers.get("x-api-token")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer":
        given = value.strip()
    return given or None


def _is_admin(given: str, expected: SecretStr | None) -> bool:
    if expected is None:
        return False
    return secrets.compare_digest(given.encode(), expected.get_secret_value().encode())


TenantDep = Annotated[str, Depends(require_token)]

#: ``?cursor=``: a page's ``next_cursor`` (an id), or 422: a made-up one used to give the
#: first page, as if the listing had started again
CursorParam = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="the next_cursor of the page before",
    ),
]


def admin_only(tenant: str, why: str) -> None:
    """403 for a tenant's token where what is asked concerns every tenant (``why``
    says so); the admin token (tenant ``default``) passes."""
    if tenant != "default":
        raise HTTPException(403, f"{why}: use the admin token")
