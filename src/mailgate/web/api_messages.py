"""``/api/v1/messages``: submit, inspect, retry and cancel queued mail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailgate.model import State
from mailgate.store import MessageRecord
from mailgate.web.deps import ServicesDep, TenantDep, require_token

__all__ = ["router"]

router = APIRouter(tags=["messages"], dependencies=[Depends(require_token)])


class RejectedOut(BaseModel):
    index: int
    id: str | None
    reason: str


class SubmitOut(BaseModel):
    queued: int
    ids: list[str]
    duplicates: list[int]
    rejected: list[RejectedOut]


class RecipientOut(BaseModel):
    status: str
    code: int | None
    text: str


class AttemptOut(BaseModel):
    at: datetime
    transport: str
    code: int | None
    enhanced_code: str | None
    text: str
    duration_ms: int
    recipients: dict[str, RecipientOut]


class MessageOut(BaseModel):
    id: str
    key: str | None
    account: str
    state: State
    from_: str = Field(alias="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    last_error: str | None
    metadata: dict[str, Any]
    attempts: list[AttemptOut]


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None


_SUBMIT_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/MessageIn"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/MessageIn"}},
                    ]
                }
            }
        },
    }
}


@router.post(
    "/messages",
    status_code=202,
    response_model=SubmitOut,
    openapi_extra=_SUBMIT_SCHEMA,
    responses={422: {"model": SubmitOut, "description": "every item was rejected"}},
)
async def submit(
    services: ServicesDep, tenant: TenantDep, body: Annotated[Any, Body()]
) -> JSONResponse:
    """Queue one message or a list. Good items are committed before the 202;
    bad ones are listed in ``rejected`` with the reason."""
    items = body if isinstance(body, list) else [body]
    report = await services.submissions.submit(items, tenant)
    payload = {
        "queued": len(report.ids),
        "ids": report.ids,
        "duplicates": report.duplicates,
        "rejected": [{"index": r.index, "id": r.id, "reason": r.reason} for r in report.rejected],
    }
    return JSONResponse(payload, status_code=202 if report.ids or not items else 422)


@router.get("/messages", response_model=MessagePage)
async def list_messages(
    services: ServicesDep,
    tenant: TenantDep,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    records, next_cursor = await services.queue.list(
        tenant, state=state, limit=limit, cursor=cursor
    )
    return {"items": [message_json(r) for r in records], "next_cursor": next_cursor}


@router.get("/messages/{message_id}", response_model=MessageOut)
async def get_message(message_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return message_json(await services.queue.get(message_id, tenant))


@router.post("/messages/{message_id}/retry", response_model=MessageOut)
async def retry_message(
    message_id: str, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    """Deferred or failed → queued, due now."""
    await services.queue.retry(message_id, tenant, services.clock.now())
    services.submissions.on_queued()
    return message_json(await services.queue.get(message_id, tenant))


@router.delete("/messages/{message_id}", response_model=MessageOut)
async def cancel_message(
    message_id: str, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    """Cancel a message that has not been sent (409 if it was, or is being sent)."""
    await services.queue.cancel(message_id, tenant, services.clock.now())
    return message_json(await services.queue.get(message_id, tenant))


def message_json(r: MessageRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "key": r.key,
        "account": r.account,
        "state": r.state.value,
        "from": r.sender,
        "to": list(r.to),
        "cc": list(r.cc),
        "bcc": list(r.bcc),
        "subject": r.subject,
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
        "next_attempt_at": _iso(r.next_attempt_at),
        "last_error": r.last_error,
        "metadata": r.metadata,
        "attempts": [
            {
                "at": _iso(a.at),
                "transport": a.transport,
                "code": a.code,
                "enhanced_code": a.enhanced_code,
                "text": a.text,
                "duration_ms": a.duration_ms,
                "recipients": {
                    k: {"status": v.status.value, "code": v.code, "text": v.text}
                    for k, v in a.recipients.items()
                },
            }
            for a in r.attempts
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
