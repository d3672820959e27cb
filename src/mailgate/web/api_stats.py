"""``GET /api/v1/stats``: the queue by state, what finished in the last hour and day
(sent, failed, success rate, sent per minute, each account's last error) and the SMTP
pools (what reuse saves).

A tenant sees its own: the pools of its accounts (``tenant/account``) and the
counts of its messages. The configured relay is the ``default`` tenant's account.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from mailgate.metrics import PoolCounters
from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.responses import errors

__all__ = ["PoolStatsSource", "router"]

#: What the composition root hands over: every pool's counters by ``tenant/account``
#: (the same figures /metrics shows).
PoolStatsSource = PoolCounters

router = APIRouter(tags=["stats"], dependencies=[Depends(require_token)])


class PoolStatsOut(BaseModel):
    """One account's SMTP connection pool, counted since the gateway started."""

    created: int = Field(description="connections opened")
    reused: int = Field(description="messages sent on a connection already open")
    closed: int = Field(description="connections closed (QUIT, dropped or expired)")
    in_use: int = Field(description="connections carrying a message now")
    idle: int = Field(description="open connections waiting for a message")


class WindowOut(BaseModel):
    """Messages that reached a final state within the window."""

    sent: int
    failed: int
    success_rate: float | None = Field(description="sent / (sent + failed); null when none")


class LastErrorOut(BaseModel):
    at: datetime
    error: str
    message_id: str


class StatsOut(BaseModel):
    pools: dict[str, PoolStatsOut] = Field(description="by tenant/account")
    queue: dict[str, int] = Field(description="messages by state")
    last_hour: WindowOut
    last_day: WindowOut
    sent_per_minute: list[int] = Field(
        description="messages sent in each of the last 60 minutes, oldest first"
    )
    last_errors: dict[str, LastErrorOut] = Field(
        description="each account's most recent failure or deferral of the last 24 hours"
    )
    firestore: FirestoreOut | None = Field(
        None, description="the watched Firestore collection; null when none is"
    )


class FirestoreOut(BaseModel):
    last_poll_at: str | None
    last_poll_found: int = Field(description="documents the last poll's queries returned")
    last_poll_queued: int = Field(description="of them, queued by that poll")
    stream: str = Field(description="the listener: off, connecting, live or broken")
    stream_restarts: int = Field(description="times the listener subscribed again")
    documents_queued: int = Field(description="documents queued since the gateway started")
    documents_invalid: int = Field(description="documents written back as ERROR, invalid")
    leases_lost: int = Field(
        description="documents found and queued whose lease another gateway (or a change"
        " to the document) took first"
    )
    poll_interval: float


def _window(sent: int, failed: int) -> WindowOut:
    done = sent + failed
    return WindowOut(sent=sent, failed=failed, success_rate=sent / done if done else None)


def _pool_stats(request: Request) -> PoolStatsSource | None:
    source: PoolStatsSource | None = getattr(request.state, "pool_stats", None)
    return source


PoolStatsDep = Annotated[PoolStatsSource | None, Depends(_pool_stats)]


@router.get("/stats", responses=errors())
async def get_stats(services: ServicesDep, tenant: TenantDep, pools: PoolStatsDep) -> StatsOut:
    """Queue counts, recent activity and pool counters, for this tenant."""
    mine = f"{tenant}/"
    counters = pools() if pools is not None else {}
    activity = await services.messages.activity(tenant)
    return StatsOut(
        last_hour=_window(activity.sent_hour, activity.failed_hour),
        last_day=_window(activity.sent_day, activity.failed_day),
        sent_per_minute=list(activity.per_minute),
        last_errors={
            account: LastErrorOut(at=e.at, error=e.error, message_id=e.message_id)
            for account, e in activity.last_errors.items()
        },
        pools={
            key: PoolStatsOut(**dict(value))
            for key, value in counters.items()
            if key.startswith(mine)
        },
        queue=await services.messages.counts(tenant),
        firestore=FirestoreOut(**services.firestore.stats_view()) if services.firestore else None,
    )
