"""``GET/PUT /api/v1/chaos``: the capture server's chaos triggers (issue 10), changed at
run time: each stage (``auth``, ``mail``, ``rcpt``, ``data``) answers its ``code`` to a
``probability`` percent of its commands, to test how an application copes with refusals.

The triggers are the whole gateway's, so a tenant's token is refused (403), as for
``/settings``. They are the ones Mailpit's ``/mailpit/api/v1/chaos`` shows and sets (it
has no ``data`` stage). A ``PUT`` replaces them all: a stage left out is off. They last
until the process stops; ``smtp.chaos`` sets them at start. Only the capture server
applies them (submission never refuses on purpose).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from mailgate.ingest.chaos import Chaos, Stage, Triggers, configured
from mailgate.settings import ChaosSettings, ChaosTrigger
from mailgate.web.deps import ServicesDep, TenantDep, admin_only, require_token
from mailgate.web.responses import errors

__all__ = ["router"]

router = APIRouter(tags=["operations"], dependencies=[Depends(require_token)])

_NOT_YOURS: dict[int | str, dict[str, Any]] = {
    403: {"description": "a tenant's token: use the admin token"}
}


def _chaos(services: ServicesDep, tenant: TenantDep) -> Chaos:
    admin_only(tenant, "chaos changes the whole gateway")
    if services.chaos is None:
        raise HTTPException(404, "no chaos triggers here")
    return services.chaos


ChaosDep = Annotated[Chaos, Depends(_chaos)]


def _view(triggers: Triggers) -> ChaosSettings:
    stages = {s.value: triggers.at(s) for s in Stage}
    return ChaosSettings(
        **{name: ChaosTrigger(code=t.code, probability=t.probability) for name, t in stages.items()}
    )


@router.get("/chaos", response_model=ChaosSettings, responses=errors(404) | _NOT_YOURS)
async def get_chaos(chaos: ChaosDep) -> ChaosSettings:
    """The triggers in force, every stage (probability 0: off)."""
    return _view(chaos.triggers)


@router.put("/chaos", response_model=ChaosSettings, responses=errors(400, 404, 415) | _NOT_YOURS)
async def set_chaos(body: ChaosSettings, chaos: ChaosDep) -> ChaosSettings:
    """Replace every trigger (a stage left out is off), applied from the next command of
    every session, open ones included. 422 names a code outside 400–599, a probability
    outside 0–100 or an unknown stage."""
    given = configured(body)
    return _view(chaos.set({stage: given.at(stage) for stage in Stage}))
