"""``/api/v1/webhooks``: the caller's tenant's endpoints and their attempts, and
``/api/v1/events/{id}/replay``.

The signing secret is write-only: it appears once, in the 201 that generated it, and
never again; a 422 never echoes the submitted body (the secret could be in it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from mailgate.errors import InvalidInput
from mailgate.services.webhooks import WebhookIn, WebhookPatch, WebhooksService, webhook_view
from mailgate.web.api_accounts import NoEchoRoute
from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.responses import errors

__all__ = ["router"]

router = APIRouter(
    tags=["webhooks"], dependencies=[Depends(require_token)], route_class=NoEchoRoute
)


class WebhookOut(BaseModel):
    id: str
    url: str
    kinds: list[str] | None = Field(description="the event kinds it takes; null: every kind")
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="why it was disabled (410 Gone…)")
    created_at: str
    updated_at: str


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="the generated signing secret: shown here once, never again;"
        " null when the request gave one"
    )


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    id: int
    event_id: int
    kind: str
    attempted_at: str
    outcome: str = Field(description="delivered, failed, dead (retries over) or gone (410)")
    status: int | None = Field(description="the receiver's HTTP status; null: no answer")
    error: str | None
    duration_ms: int


class DeliveriesOut(BaseModel):
    attempts: list[AttemptOut] = Field(description="newest first")
    pending: int = Field(description="events still to deliver (waiting, in flight, retrying)")
    dead: int = Field(description="events whose retries ran out")
    next_before: int | None = Field(description="pass as ?before= for older attempts")


class ReplayIn(BaseModel):
    webhook_id: str | None = Field(
        None, description="only this endpoint; left out: every enabled one taking the kind"
    )


class ReplayOut(BaseModel):
    event_id: int
    webhooks: list[str] = Field(description="the endpoints it is queued for again")


def _webhooks(services: ServicesDep) -> WebhooksService:
    if services.webhooks is None:
        raise HTTPException(404, "webhooks are not available here")
    return services.webhooks


def _unreachable(exc: InvalidInput) -> RequestValidationError:
    """A URL the address check refused, as FastAPI's own 422 says what is wrong."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ["body", "url"], "msg": str(exc)}]
    )


@router.get("/webhooks", response_model=WebhookList, responses=errors())
async def list_webhooks(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"webhooks": [webhook_view(w) for w in await _webhooks(services).list(tenant)]}


@router.post(
    "/webhooks", status_code=201, response_model=WebhookCreated, responses=errors(400, 409, 415)
)
async def create_webhook(spec: WebhookIn, services: ServicesDep, tenant: TenantDep) -> Any:
    """The URL must reach a public address (unless private networks or its host are
    allowed); 409 when no ``MAILGATE_SECRET_KEY`` is set to keep the secret with."""
    try:
        created = await _webhooks(services).create(tenant, spec)
    except InvalidInput as exc:
        raise _unreachable(exc) from None
    return {**webhook_view(created.webhook), "secret": created.secret}


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, responses=errors(404))
async def get_webhook(webhook_id: str, services: ServicesDep, tenant: TenantDep) -> Any:
    return webhook_view(await _webhooks(services).get(tenant, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}", response_model=WebhookOut, responses=errors(400, 404, 409, 415)
)
async def update_webhook(
    webhook_id: str, patch: WebhookPatch, services: ServicesDep, tenant: TenantDep
) -> Any:
    """Enabling an endpoint clears why it was disabled and resumes what it had pending."""
    try:
        return webhook_view(await _webhooks(services).update(tenant, webhook_id, patch))
    except InvalidInput as exc:
        raise _unreachable(exc) from None


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=errors(404))
async def delete_webhook(webhook_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    await _webhooks(services).delete(tenant, webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries", response_model=DeliveriesOut, responses=errors(404)
)
async def webhook_deliveries(
    webhook_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Every POST made to the endpoint, newest first, with the receiver's answer."""
    attempts, backlog = await _webhooks(services).attempts(
        tenant, webhook_id, limit=limit, before=before
    )
    rows = [
        {
            "id": a.id,
            "event_id": a.event_id,
            "kind": a.kind,
            "attempted_at": a.attempted_at.isoformat().replace("+00:00", "Z"),
            "outcome": a.outcome,
            "status": a.status,
            "error": a.error,
            "duration_ms": a.duration_ms,
        }
        for a in attempts
    ]
    next_before = attempts[-1].id if len(attempts) == limit else None
    return {
        "attempts": rows,
        "pending": backlog.pending,
        "dead": backlog.dead,
        "next_before": next_before,
    }


@router.post(
    "/events/{event_id}/replay",
    status_code=202,
    response_model=ReplayOut,
    responses=errors(400, 404, 415),
)
async def replay_event(
    event_id: Annotated[int, Path(ge=1, le=2**62)],
    services: ServicesDep,
    tenant: TenantDep,
    body: ReplayIn | None = None,
) -> dict[str, Any]:
    """Send one event again, even one already delivered or dead-lettered."""
    webhook_id = body.webhook_id if body is not None else None
    queued = await _webhooks(services).replay(tenant, event_id, webhook_id)
    return {"event_id": event_id, "webhooks": queued}
