"""``POST /api/v1/poll`` and ``GET/PATCH /api/v1/settings``: the operator's controls,
applied at once, without a restart: poll the Firestore collection now, and change the
settings that may change at run time (:mod:`mailgate.services.runtime`), which persist.

These act on the whole gateway, so a tenant's token is refused (403) as for /metrics.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from mailgate.errors import InvalidInput
from mailgate.services.runtime import LOG_LEVELS, RUNTIME, RuntimeSettings, boot_view
from mailgate.settings import Settings, not_a_bool
from mailgate.web.deps import ServicesDep, TenantDep, admin_only, require_token
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
    poll_interval: float = Field(
        description="seconds between polls of the Firestore source (firestore.poll_interval)"
    )
    runtime: dict[str, Any] = Field(
        description="each setting changed at run time, by dotted name: its value in force"
    )
    changed: list[str] = Field(
        description="of them, the ones changed from the configured value (stored)"
    )
    boot: dict[str, Any] = Field(
        description="every configured setting, read only (a restart changes them);"
        " secrets as **********"
    )


def _patch_model() -> type[BaseModel]:
    """The PATCH body: each runtime setting by its dotted name, optional and nullable
    (null: back to the configured value), with the constraints of its setting, so the
    schema says exactly what is accepted. ``poll_interval``: the old name of
    ``firestore.poll_interval``."""
    fields: dict[str, Any] = {
        "poll_interval": _nullable(_setting("firestore.poll_interval"), None, POLL_ALIAS)
    }
    for name in RUNTIME:
        if name == "log_level":
            fields["log_level"] = (Literal[LOG_LEVELS] | None, Field(None))
        else:
            source = _setting(name)
            fields[name.replace(".", "__")] = _nullable(source, name, source.description)
    return create_model(
        "SettingsPatch", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields
    )


def _setting(name: str) -> FieldInfo:
    """The field of :class:`Settings` a dotted name names (``retry.max_attempts``)."""
    section, _, field = name.partition(".")
    model = Settings.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model.model_fields[field]


def _nullable(source: FieldInfo, alias: str | None, description: str | None) -> Any:
    """``source``'s type and constraints, optional and nullable; a number refuses true
    and false as the settings do (:func:`~mailgate.settings.not_a_bool`)."""
    checks = (BeforeValidator(not_a_bool),) if source.annotation in (int, float) else ()
    metadata = (*source.metadata, *checks)  # constraints first: they stay in the schema
    annotation = Annotated[(source.annotation, *metadata)] if metadata else source.annotation
    return Optional[annotation], Field(None, alias=alias, description=description)  # noqa: UP045


POLL_ALIAS = "firestore.poll_interval, as it was named before"
SettingsPatch = _patch_model()


def _source(services: ServicesDep, tenant: TenantDep) -> PolledSource:
    admin_only(tenant, "this changes the whole gateway")
    if services.firestore is None:
        raise HTTPException(404, "no source is polled here (start with serve --firestore)")
    return services.firestore


@router.post("/poll", response_model=PollOut, responses=errors(404) | _FORBIDDEN)
async def poll_now(services: ServicesDep, tenant: TenantDep) -> Any:
    """Poll the Firestore collection now and answer with what that poll found."""
    result = await _source(services, tenant).poll()
    return {"found": result.found, "queued": result.queued, "errors": result.errors}


@router.get("/settings", response_model=SettingsOut, responses=errors() | _FORBIDDEN)
async def get_settings(services: ServicesDep, tenant: TenantDep) -> Any:
    """The settings changed at run time (their values in force, and which were changed)
    and the boot-only ones, secrets redacted."""
    return _settings_view(_runtime(services, tenant))


@router.patch("/settings", response_model=SettingsOut, responses=errors(400, 415) | _FORBIDDEN)
async def patch_settings(
    patch: SettingsPatch,  # type: ignore[valid-type]
    services: ServicesDep,
    tenant: TenantDep,
) -> Any:
    """Applied at once, without a restart (the next poll waits a new poll interval, the
    next retry follows a new schedule), stored first so they outlive a restart, and
    picked up within seconds by every process sharing the database. A wrong value is
    422 naming it; then nothing changes."""
    runtime = _runtime(services, tenant)
    changes = patch.model_dump(by_alias=True, exclude_unset=True)  # type: ignore[attr-defined]
    if "poll_interval" in changes:
        changes["firestore.poll_interval"] = changes.pop("poll_interval")
    try:
        await runtime.change(changes)
    except InvalidInput as exc:  # as FastAPI's own 422 says what is wrong
        name = str(exc).partition(":")[0]
        problem = {"type": "value_error", "loc": ["body", name], "msg": str(exc)}
        raise RequestValidationError([problem]) from None
    return _settings_view(runtime)


def _runtime(services: ServicesDep, tenant: str) -> RuntimeSettings:
    admin_only(tenant, "this changes the whole gateway")
    if services.runtime is None:
        raise HTTPException(404, "settings are not changed at run time here")
    return services.runtime


def _settings_view(runtime: RuntimeSettings) -> dict[str, Any]:
    values = runtime.current()
    return {
        "poll_interval": values["firestore.poll_interval"],
        "runtime": values,
        "changed": sorted(runtime.changed),
        "boot": boot_view(runtime.configured),
    }
