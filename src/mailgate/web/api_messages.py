"""``/api/v1/messages``: submit, inspect, retry and cancel queued mail."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from mailgate.ingest.submission import Rejected
from mailgate.model import FailureClass, State
from mailgate.services.messages import message_view
from mailgate.store import MessageRecord
from mailgate.web.deps import CursorParam, ServicesDep, TenantDep, require_token
from mailgate.web.rendering import encode, encode_item, json_response, page_response
from mailgate.web.responses import errors

__all__ = ["router"]

router = APIRouter(tags=["messages"], dependencies=[Depends(require_token)])


class RejectedOut(BaseModel):
    index: int
    id: str | None
    reason: str
    status: int | None = Field(
        None,
        description="429: refused because its account is over its rate limit"
        " (limit_behavior: reject); absent for an invalid item",
    )


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
    failure_class: FailureClass | None = Field(
        description="why it did not go through (RFC 3463 subject, or the stage); null: sent"
    )
    counted: bool = Field(description="false: the account's problem, no try was spent")
    account: str | None = Field(description="the account it went through; null: captured")
    remote_id: str | None = Field(description="the next hop's id for the message")


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
    wait_reason: str | None = Field(
        description="why a due message is held: its account is unknown, disabled or"
        " failing (login, TLS), or over its rate limit; null when it is not waiting"
    )
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


#: Client data stored with a message; a bad one must not hide the rest.
_USER_FIELDS = (("metadata",),)
_EMPTY_BODY = "body: a JSON message or list of messages is required"
_PARSE_INLINE = 256 * 1024  #: bytes of JSON parsed on the event loop; larger goes to a thread


@router.post(
    "/messages",
    status_code=202,
    response_model=SubmitOut,
    openapi_extra=_SUBMIT_SCHEMA,
    responses={
        422: {"model": SubmitOut, "description": "every item was rejected, or there was no body"},
        429: {"model": SubmitOut, "description": "every item was refused for a rate limit"},
        **errors(400, 415),
    },
)
async def submit(request: Request, services: ServicesDep, tenant: TenantDep) -> Response:
    """Queue one message or a list. Good items are committed before the 202;
    bad ones are listed in ``rejected`` with the reason.

    The body is parsed here rather than by FastAPI so that every answer has a
    documented shape: no body is a 422 ``SubmitOut``, malformed JSON a 400.
    """
    raw = await request.body()
    if not raw.strip():
        return _submit_response([], [{"index": 0, "id": None, "reason": _EMPTY_BODY}], [])
    _require_json(request.headers.get("content-type"))
    # A large batch takes json.loads a while: parse it off the event loop so
    # SMTP sessions and other requests are served meanwhile.
    body = (
        await asyncio.to_thread(_parse_json, raw) if len(raw) > _PARSE_INLINE else _parse_json(raw)
    )
    items = body if isinstance(body, list) else [body]
    report = await services.messages.submit(items, tenant)
    rejected = [_rejected_json(r) for r in report.rejected]
    return _submit_response(report.ids, rejected, report.duplicates, empty_ok=not items)


def _rejected_json(r: Rejected) -> dict[str, Any]:
    item: dict[str, Any] = {"index": r.index, "id": r.id, "reason": r.reason}
    if r.status is not None:
        item["status"] = r.status
    return item


def _submit_response(
    ids: list[str], rejected: list[dict[str, Any]], duplicates: list[int], *, empty_ok: bool = False
) -> Response:
    payload = {"queued": len(ids), "ids": ids, "duplicates": duplicates, "rejected": rejected}
    return json_response(encode(payload), 202 if ids or empty_ok else _refused_status(rejected))


def _refused_status(rejected: list[dict[str, Any]]) -> int:
    """Nothing queued: 429 when every item was refused for rate (RFC 6585 §4), else 422."""
    rate_only = bool(rejected) and all(r.get("status") == 429 for r in rejected)
    return 429 if rate_only else 422


def _require_json(content_type: str | None) -> None:
    """Only JSON is read: a browser cannot send it cross-origin without a CORS
    preflight, which this API never grants (a text/plain form post could)."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise HTTPException(
            415, f"body: Content-Type must be application/json, not {media_type or 'missing'}"
        )


def _parse_json(raw: bytes) -> Any:
    """RFC 8259 JSON; NaN and Infinity are refused (§6), as is nesting Python cannot hold."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        _bad_json("nested too deeply")
    except json.JSONDecodeError as exc:
        _bad_json(f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except ValueError as exc:  # not UTF-8, an integer too long, NaN
        _bad_json(str(exc))


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number (RFC 8259 §6)")


def _bad_json(reason: str) -> NoReturn:
    raise HTTPException(400, f"body: invalid JSON: {reason}")


@router.get("/messages", response_model=MessagePage, responses=errors())
async def list_messages(
    services: ServicesDep,
    tenant: TenantDep,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: CursorParam = None,
) -> Response:
    records, next_cursor = await services.messages.list(
        tenant, state=state, limit=limit, cursor=cursor
    )
    return page_response((_encoded(r) for r in records), next_cursor)


@router.get("/messages/{message_id}", response_model=MessageOut, responses=errors(404))
async def get_message(message_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    return json_response(_encoded(await services.messages.get(message_id, tenant)))


@router.post("/messages/{message_id}/retry", response_model=MessageOut, responses=errors(404, 409))
async def retry_message(message_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Deferred or failed → queued, due now."""
    return json_response(_encoded(await services.messages.retry(message_id, tenant)))


@router.delete("/messages/{message_id}", response_model=MessageOut, responses=errors(404, 409))
async def cancel_message(message_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """Cancel a message that has not been sent (409 if it was, or is being sent)."""
    return json_response(_encoded(await services.messages.cancel(message_id, tenant)))


def _encoded(r: MessageRecord) -> bytes:
    return encode_item(message_view(r), user_fields=_USER_FIELDS)
