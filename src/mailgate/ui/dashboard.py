"""The dashboard: one view read from the services, rendered as named fragments.

Every figure comes from a query that an index answers (the queue by state, what
finished in the last day from ``ix_messages_state_updated``, the newest failures from
``ix_messages_tenant_state``), so the page costs the same with 100,000 messages kept
as with ten. The UI is the operator's: it shows tenant ``default``, as
``GET /api/v1/stats`` does for the admin token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from mailgate import __version__
from mailgate.metrics import PoolCounters
from mailgate.model import Account, State
from mailgate.store import Activity, MessageRecord
from mailgate.ui.chart import bar_chart
from mailgate.ui.context import UiContext
from mailgate.ui.options import SmtpStatus

if TYPE_CHECKING:  # mailgate.web imports this package
    from mailgate.web.services import Services

__all__ = ["FRAGMENTS", "DashboardView", "dashboard_view", "render_fragments"]

TENANT = "default"
#: the live parts of the page, each a template ``dashboard/NAME.html`` and an SSE event
FRAGMENTS = ("status", "queue", "activity", "errors", "sources", "accounts")
#: the queue's states in the order a message lives them
STATES = tuple(State)
RECENT_ERRORS = 8


@dataclass(frozen=True, slots=True)
class Window:
    sent: int
    failed: int

    @property
    def success_rate(self) -> str:
        done = self.sent + self.failed
        return f"{100 * self.sent / done:.1f} %" if done else "–"


@dataclass(frozen=True, slots=True)
class AccountHealth:
    id: str
    enabled: bool
    ok_at: str | None
    error: str | None  #: the last test's or send's failure, else the day's last error


@dataclass(frozen=True, slots=True)
class DashboardView:
    mode: str
    version: str
    uptime: str
    queue: dict[str, int]
    hour: Window
    day: Window
    chart: str
    errors: list[MessageRecord]
    firestore: dict[str, Any] | None
    smtp: SmtpStatus | None
    accounts: list[AccountHealth]
    outbox: dict[str, int]
    pools: dict[str, dict[str, int]]


async def dashboard_view(request: Request, ui: UiContext) -> DashboardView:
    services: Services = request.state.services
    pools: PoolCounters | None = getattr(request.state, "pool_stats", None)
    counts, activity, errors, accounts, outbox = await asyncio.gather(
        services.messages.counts(TENANT),
        services.messages.activity(TENANT),
        _recent_errors(services),
        services.accounts.list(TENANT) if services.accounts else _none(),
        ui.options.outbox() if ui.options.outbox else _empty(),
    )
    return DashboardView(
        mode=services.mode,
        version=__version__,
        uptime=_duration(time.monotonic() - ui.options.started),
        queue={state.value: counts.get(state.value, 0) for state in STATES},
        hour=Window(activity.sent_hour, activity.failed_hour),
        day=Window(activity.sent_day, activity.failed_day),
        chart=bar_chart(activity.per_minute, label="messages sent per minute, last hour"),
        errors=errors,
        firestore=services.firestore.stats_view() if services.firestore else None,
        smtp=ui.options.smtp() if ui.options.smtp else None,
        accounts=_health(accounts or [], activity),
        outbox=outbox,
        pools={k: dict(v) for k, v in (pools() if pools else {}).items()},
    )


def render_fragments(ui: UiContext, view: DashboardView) -> dict[str, str]:
    return {name: ui.fragment(f"dashboard/{name}.html", v=view) for name in FRAGMENTS}


async def _recent_errors(services: Services) -> list[MessageRecord]:
    """The newest failed and deferred messages, newest change first."""
    failed, deferred = await asyncio.gather(
        services.messages.list(TENANT, state=State.FAILED, limit=RECENT_ERRORS),
        services.messages.list(TENANT, state=State.DEFERRED, limit=RECENT_ERRORS),
    )
    both = failed[0] + deferred[0]
    return sorted(both, key=lambda r: r.updated_at, reverse=True)[:RECENT_ERRORS]


def _health(accounts: list[Account], activity: Activity) -> list[AccountHealth]:
    return [
        AccountHealth(
            id=a.id,
            enabled=a.is_outbound_enabled,
            ok_at=a.connection_last_ok_at.isoformat(timespec="seconds")
            if a.connection_last_ok_at
            else None,
            error=a.connection_error
            or (activity.last_errors[a.id].error if a.id in activity.last_errors else None),
        )
        for a in accounts
    ]


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


async def _none() -> list[Account]:
    return []


async def _empty() -> dict[str, int]:
    return {}
