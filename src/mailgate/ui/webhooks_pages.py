"""The webhooks page of the admin UI (issue 11): ``/webhooks``.

The admin's (tenant ``default``) endpoints through :class:`WebhooksService`: each with
its last delivery and how many events are pending or dead; create one (the signing
secret is write-only: typed in, never rendered back, not even after a refused form),
enable, disable, delete, and an endpoint's recent deliveries. Every change is an htmx
post answered with the panel redrawn and what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from mailgate.errors import Conflict, InvalidInput, NotFound
from mailgate.services.webhooks import WebhookIn, WebhookPatch, WebhooksService, shown_url
from mailgate.store.outbox import EventKind
from mailgate.store.webhooks import Backlog, Webhook, WebhookAttempt
from mailgate.ui.context import render, ui_context
from mailgate.ui.guard import UiSessionDep, ui_guard

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])

TENANT = "default"  #: the admin's tenant, as the admin API token's
DELIVERIES = 20  #: the recent deliveries shown for one endpoint


@dataclass(frozen=True, slots=True)
class EndpointRow:
    webhook: Webhook
    url: str  #: a password in the URL masked
    last: WebhookAttempt | None
    backlog: Backlog


@router.get("/webhooks")
async def webhooks_page(request: Request, session: UiSessionDep) -> HTMLResponse:
    panel = await _panel(request)
    return render(request, "webhooks/page.html", session, title="Webhooks", panel=panel)


@router.post("/webhooks")
async def webhook_create(request: Request) -> HTMLResponse:
    service = _service(request)
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    url = (fields.get("url") or [""])[0].strip()
    spec = {
        "url": url,
        "kinds": fields.get("kinds") or None,
        "description": (fields.get("description") or [""])[0].strip(),
        "secret": (fields.get("secret") or [""])[0] or None,
    }
    if service is None:
        return HTMLResponse(await _panel(request))
    if spec["secret"] is None:  # the UI never shows a secret, so it never makes one
        return HTMLResponse(await _panel(request, error="secret: required", url=url))
    try:
        created = await service.create(TENANT, WebhookIn.model_validate(spec))
    except ValidationError as exc:
        return HTMLResponse(await _panel(request, error=_reasons(exc), url=url))
    except (InvalidInput, Conflict) as exc:
        return HTMLResponse(await _panel(request, error=str(exc), url=url))
    done = f"Added {shown_url(created.webhook.url)}."
    return HTMLResponse(await _panel(request, done=done))


@router.post("/webhooks/{webhook_id}/enable")
async def webhook_enable(request: Request, webhook_id: str) -> HTMLResponse:
    return await _switch(request, webhook_id, enabled=True)


@router.post("/webhooks/{webhook_id}/disable")
async def webhook_disable(request: Request, webhook_id: str) -> HTMLResponse:
    return await _switch(request, webhook_id, enabled=False)


@router.post("/webhooks/{webhook_id}/delete")
async def webhook_delete(request: Request, webhook_id: str) -> HTMLResponse:
    service = _service(request)
    try:
        if service is not None:
            await service.delete(TENANT, webhook_id)
    except NotFound as exc:
        return HTMLResponse(await _panel(request, error=str(exc)))
    return HTMLResponse(await _panel(request, done="Deleted."))


@router.get("/webhooks/{webhook_id}/deliveries")
async def webhook_deliveries(
    request: Request, webhook_id: str, before: int | None = Query(None, ge=1, le=2**62)
) -> HTMLResponse:
    """An endpoint's recent POSTs, newest first (``before``: older ones)."""
    service = _service(request)
    if service is None:
        return HTMLResponse("", status_code=404)
    webhook = await service.get(TENANT, webhook_id)
    attempts, backlog = await service.attempts(TENANT, webhook_id, limit=DELIVERIES, before=before)
    older = attempts[-1].id if len(attempts) == DELIVERIES else None
    html = ui_context(request).fragment(
        "webhooks/deliveries.html",
        w=webhook,
        url=shown_url(webhook.url),
        attempts=attempts,
        backlog=backlog,
        older=older,
    )
    return HTMLResponse(html)


async def _switch(request: Request, webhook_id: str, *, enabled: bool) -> HTMLResponse:
    service = _service(request)
    try:
        if service is not None:
            await service.update(TENANT, webhook_id, WebhookPatch(enabled=enabled))
    except NotFound as exc:
        return HTMLResponse(await _panel(request, error=str(exc)))
    return HTMLResponse(await _panel(request, done="Enabled." if enabled else "Disabled."))


async def _panel(
    request: Request, *, done: str | None = None, error: str | None = None, url: str = ""
) -> str:
    """The endpoints, the form and the outcome of the last change. A few endpoints per
    tenant: two small indexed reads each (last attempt, backlog)."""
    service = _service(request)
    rows: list[EndpointRow] = []
    if service is not None:
        for webhook in await service.list(TENANT):
            last, backlog = await service.attempts(TENANT, webhook.id, limit=1, before=None)
            rows.append(
                EndpointRow(webhook, shown_url(webhook.url), next(iter(last), None), backlog)
            )
    return ui_context(request).fragment(
        "webhooks/panel.html",
        available=service is not None,
        rows=rows,
        kinds=[k.value for k in EventKind],
        done=done,
        error=error,
        url=url,
    )


def _service(request: Request) -> WebhooksService | None:
    service: WebhooksService | None = request.state.services.webhooks
    return service


def _reasons(exc: ValidationError) -> str:
    """Where and why, never the value given (it could be the secret)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
    )
