"""``/api/v1/inbox``: captured mail — list, read, raw source, attachments, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from mailgate.errors import InvalidInput
from mailgate.inbox import capture_event
from mailgate.inbox.sorting import MAX_TAGS
from mailgate.store import CapturedRecord
from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.downloads import download_headers
from mailgate.web.rendering import encode_item, json_response, page_response
from mailgate.web.responses import errors

__all__ = ["router"]

router = APIRouter(tags=["inbox"], dependencies=[Depends(require_token)])


#: Parts of a capture that come straight from the sender; a bad one must not hide the rest.
_USER_FIELDS = (("message", "headers"), ("authentication",), ("envelope",), ("attachments",))

#: ``?inbox=``: one inbox's mail only (names as ``inbox.sort_by`` makes them)
InboxParam = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="one inbox's mail only")
]
#: ``?q=``: Mailpit's search syntax (README, "Search")
SearchParam = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Mailpit's search syntax: words, 'phrases' in double quotes, from: to:"
        " subject: message-id: tag: is:read has:attachment before: after:, - to negate",
    ),
]


class BoxOut(BaseModel):
    name: str
    total: int
    unread: int


class BoxList(BaseModel):
    inboxes: list[BoxOut]


class CapturedPatch(BaseModel):
    """What ``PUT /inbox/{id}`` changes; a field left out stays as it is."""

    read: bool | None = None
    tags: list[str] | None = Field(
        None, max_length=MAX_TAGS, description="replaces the tags (cleaned as X-Tags are)"
    )


def _bad_query(exc: InvalidInput) -> RequestValidationError:
    """A date or size the search cannot read, as FastAPI's own 422 says what is wrong."""
    return RequestValidationError([{"type": "value_error", "loc": ["query", "q"], "msg": str(exc)}])


@router.get("/inboxes", response_model=BoxList, responses=errors())
async def list_boxes(services: ServicesDep, tenant: TenantDep) -> Any:
    """The inboxes holding mail (``inbox.sort_by``), with total and unread counts."""
    boxes = await services.inbox.boxes(tenant)
    return {"inboxes": [{"name": b.name, "total": b.total, "unread": b.unread} for b in boxes]}


@router.get("/inbox", responses=errors())
async def list_inbox(
    services: ServicesDep,
    tenant: TenantDep,
    q: SearchParam = None,
    inbox: InboxParam = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Response:
    """Newest first; ``q`` searches (a plain word: subject, addresses, body)."""
    try:
        records, next_cursor = await services.inbox.list(
            tenant, query=q, box=inbox, limit=limit, cursor=cursor
        )
    except InvalidInput as exc:
        raise _bad_query(exc) from None
    return page_response((encode_item(summary_json(r)) for r in records), next_cursor)


@router.delete("/inbox", responses=errors())
async def clear_inbox(
    services: ServicesDep, tenant: TenantDep, q: SearchParam = None, inbox: InboxParam = None
) -> dict[str, int]:
    """Delete the tenant's captured mail, only one inbox's (``inbox``), only what ``q``
    matches; a ``q`` without a term deletes nothing."""
    try:
        return {"deleted": await services.inbox.clear(tenant, box=inbox, query=q)}
    except InvalidInput as exc:
        raise _bad_query(exc) from None


@router.get("/inbox/{capture_id}", responses=errors(404))
async def get_captured(
    capture_id: str, services: ServicesDep, tenant: TenantDep, inbox: InboxParam = None
) -> Response:
    """The capture event (attachments listed without content); marks it read."""
    record = await services.inbox.get(capture_id, tenant, box=inbox, mark_read=True)
    return json_response(encode_item(capture_event(record), user_fields=_USER_FIELDS))


@router.put("/inbox/{capture_id}", responses=errors(400, 404, 415))
async def update_captured(
    capture_id: str,
    patch: CapturedPatch,
    services: ServicesDep,
    tenant: TenantDep,
    inbox: InboxParam = None,
) -> Response:
    """Mark read or unread, replace the tags; answers the summary as it is now."""
    record = await services.inbox.update(
        capture_id, tenant, box=inbox, read=patch.read, tags=patch.tags
    )
    return json_response(encode_item(summary_json(record)))


@router.get(
    "/inbox/{capture_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}, **errors(404)},
)
async def get_raw(capture_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    raw = await services.inbox.raw(capture_id, tenant)
    return Response(raw, media_type="message/rfc822")


@router.get(
    "/inbox/{capture_id}/attachments/{index}",
    response_class=Response,
    responses={
        200: {
            "description": "the attachment's bytes, always as a download",
            "content": {"application/octet-stream": {}, "*/*": {}},
        },
        **errors(404),
    },
)
async def get_attachment(
    capture_id: str, index: int, services: ServicesDep, tenant: TenantDep
) -> Response:
    """The attachment's exact decoded bytes, with its content type, as a download.

    Whatever its type, it is never shown on the API's origin: ``attachment``
    disposition with a safe base name, ``nosniff`` and a ``sandbox`` CSP.
    """
    att = await services.inbox.attachment(capture_id, index, tenant)
    return Response(att.content, headers=download_headers(att.filename, att.content_type, index))


@router.delete("/inbox/{capture_id}", responses=errors(404))
async def delete_captured(
    capture_id: str, services: ServicesDep, tenant: TenantDep, inbox: InboxParam = None
) -> dict[str, int]:
    await services.inbox.delete(capture_id, tenant, box=inbox)
    return {"deleted": 1}


def summary_json(r: CapturedRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "received_at": r.received_at.isoformat().replace("+00:00", "Z"),
        "inbox": r.box,
        "read": r.read,
        "tags": r.tags,
        "source": r.source,
        "from": r.from_header,
        "to": r.to_header,
        "subject": r.subject,
        "message_id": r.message_id,
        "envelope": {"from": r.mail_from, "to": r.rcpt_to},
        "size": r.size,
        "attachments": len(r.attachments),
    }
