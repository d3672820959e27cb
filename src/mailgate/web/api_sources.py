"""``POST /api/v1/poll`` and ``GET/PATCH /api/v1/settings``: the operator's controls of a
polled source (the Firestore collection), applied at once, without a restart.

These act on the whole gateway, so a tenant's token is refused (403) as for /metrics.
Settings changed here last until the process stops (the admin UI's issue makes them
persist).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.responses import errors
from mailgate.web.services import PolledSource

__all__ = ["router"]

router = APIRouter(tags=["operations"], dependencies=[Depends(require_token)])

_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"description": "a tenant's token: use the admin token"}
}


class PollOut(BaseModel):
    found: int = Field(description="documents the poll's queries returned")
    queued: int = Field(description="of them, queued now")
    errors: int = Field(description="of them, written back as ERROR (invalid)")


class SettingsOut(BaseModel):
    poll_interval: float = Field(description="seconds between polls of the source")


class SettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    poll_interval: float | None = Field(None, gt=0, le=86400)


def _source(services: ServicesDep, tenant: TenantDep) -> PolledSource:
    if tenant != "default":
        raise HTTPException(403, "this changes the whole gateway: use the admin token")
    if services.firestore is None:
        raise HTTPException(404, "no source is polled here (start with serve --firestore)")
    return services.firestore


@router.post("/poll", response_model=PollOut, responses=errors(404) | _FORBIDDEN)
async def poll_now(services: ServicesDep, tenant: TenantDep) -> Any:
    """Poll the Firestore collection now and answer with what that poll found."""
    result = await _source(services, tenant).poll()
    return {"found": result.found, "queued": result.queued, "errors": result.errors}


@router.get("/settings", response_model=SettingsOut, responses=errors(404) | _FORBIDDEN)
async def get_settings(services: ServicesDep, tenant: TenantDep) -> Any:
    return {"poll_interval": _source(services, tenant).poll_interval}


@router.patch(
    "/settings", response_model=SettingsOut, responses=errors(400, 404, 415) | _FORBIDDEN
)
async def patch_settings(patch: SettingsPatch, services: ServicesDep, tenant: TenantDep) -> Any:
    """Applied at once: the next poll waits the new interval."""
    source = _source(services, tenant)
    if patch.poll_interval is not None:
        source.poll_interval = patch.poll_interval
    return {"poll_interval": source.poll_interval}
