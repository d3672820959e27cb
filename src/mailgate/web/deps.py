"""Request dependencies: the services from lifespan state, and API token auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from mailgate.web.services import Services

__all__ = ["ServicesDep", "TenantDep", "get_services", "require_token"]


def get_services(request: Request) -> Services:
    services = request.state.services
    assert isinstance(services, Services)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_token(request: Request, services: ServicesDep) -> str:
    """``Authorization: Bearer …`` or ``X-API-Token``; returns the tenant.

    With no token configured the API is open; the composition root refuses to
    start that way unless the web server is bound to loopback.
    """
    expected = services.api_token
    if expected is None:
        return "default"
    given = request.headers.get("x-api-token")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer":
        given = value.strip()
    if not given:
        raise HTTPException(
            401,
            "missing API token (Authorization: Bearer … or X-API-Token)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
    return "default"


TenantDep = Annotated[str, Depends(require_token)]
