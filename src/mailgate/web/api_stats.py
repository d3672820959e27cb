"""``GET /api/v1/stats``: the SMTP pools (what reuse saves) and the queue by state.

A tenant sees its own: the pools of its accounts (``tenant/account``) and the
counts of its messages. The configured relay is the ``default`` tenant's account.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.responses import errors

__all__ = ["PoolStatsSource", "router"]

#: What the composition root hands over: every pool's counters by ``tenant/account``.
PoolStatsSource = Callable[[], Mapping[str, Mapping[str, int]]]

router = APIRouter(tags=["stats"], dependencies=[Depends(require_token)])


class PoolStatsOut(BaseModel):
    """One account's SMTP connection pool, counted since the gateway started."""

    created: int = Field(description="connections opened")
    reused: int = Field(description="messages sent on a connection already open")
    closed: int = Field(description="connections closed (QUIT, dropped or expired)")
    in_use: int = Field(description="connections carrying a message now")
    idle: int = Field(description="open connections waiting for a message")


class StatsOut(BaseModel):
    pools: dict[str, PoolStatsOut] = Field(description="by tenant/account")
    queue: dict[str, int] = Field(description="messages by state")


def _pool_stats(request: Request) -> PoolStatsSource | None:
    source: PoolStatsSource | None = getattr(request.state, "pool_stats", None)
    return source


PoolStatsDep = Annotated[PoolStatsSource | None, Depends(_pool_stats)]


@router.get("/stats", responses=errors())
async def get_stats(services: ServicesDep, tenant: TenantDep, pools: PoolStatsDep) -> StatsOut:
    """Pool counters and queue counts, for this tenant."""
    mine = f"{tenant}/"
    counters = pools() if pools is not None else {}
    return StatsOut(
        pools={
            key: PoolStatsOut(**dict(value))
            for key, value in counters.items()
            if key.startswith(mine)
        },
        queue=await services.messages.counts(tenant),
    )
