"""``/api/v1/smtp-users``: who may submit mail over SMTP (``smtp.mode = submission``).

The password is write-only: kept only as a scrypt hash, never in an answer, and a 422
never echoes the submitted body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from pydantic import BaseModel, Field

from mailgate.services.smtp_users import (
    SmtpUserIn,
    SmtpUserPatch,
    SmtpUsersService,
    smtp_user_view,
)
from mailgate.web.api_accounts import NoEchoRoute
from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.responses import errors

__all__ = ["router"]

router = APIRouter(
    prefix="/smtp-users",
    tags=["smtp-users"],
    dependencies=[Depends(require_token)],
    route_class=NoEchoRoute,
)

Username = Annotated[str, Path(min_length=1, max_length=255)]


class SmtpUserOut(BaseModel):
    username: str
    senders: list[str] = Field(description="addresses or @domains it may send as; []: any")
    account: str = Field(description="the account its mail goes through")
    created_at: str
    updated_at: str


class SmtpUserList(BaseModel):
    smtp_users: list[SmtpUserOut]


def _users(services: ServicesDep) -> SmtpUsersService:
    if services.smtp_users is None:
        raise HTTPException(404, "SMTP users are not available here")
    return services.smtp_users


@router.get("", response_model=SmtpUserList, responses=errors())
async def list_smtp_users(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"smtp_users": [smtp_user_view(u) for u in await _users(services).list(tenant)]}


@router.post("", status_code=201, response_model=SmtpUserOut, responses=errors(400, 409, 415))
async def create_smtp_user(spec: SmtpUserIn, services: ServicesDep, tenant: TenantDep) -> Any:
    """409 when the username is taken (usernames are unique across tenants)."""
    return smtp_user_view(await _users(services).create(tenant, spec))


@router.get("/{username}", response_model=SmtpUserOut, responses=errors(404))
async def get_smtp_user(username: Username, services: ServicesDep, tenant: TenantDep) -> Any:
    return smtp_user_view(await _users(services).get(tenant, username))


@router.patch("/{username}", response_model=SmtpUserOut, responses=errors(400, 404, 415))
async def update_smtp_user(
    username: Username, patch: SmtpUserPatch, services: ServicesDep, tenant: TenantDep
) -> Any:
    """A new password takes effect at the next AUTH."""
    return smtp_user_view(await _users(services).update(tenant, username, patch))


@router.delete("/{username}", status_code=204, responses=errors(404))
async def delete_smtp_user(
    username: Username, services: ServicesDep, tenant: TenantDep
) -> Response:
    await _users(services).delete(tenant, username)
    return Response(status_code=204)
