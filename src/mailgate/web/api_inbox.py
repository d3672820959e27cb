"""``/api/v1/inbox``: captured mail — list, read, raw source, attachments, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from mailgate.inbox import capture_event
from mailgate.store import CapturedRecord
from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.downloads import download_headers
from mailgate.web.rendering import encode_item, json_response, page_response
from mailgate.web.responses import errors

__all__ = ["router"]

router = APIRouter(tags=["inbox"], dependencies=[Depends(require_token)])


#: Parts of a capture that come straight from the sender; a bad one must not hide the rest.
_USER_FIELDS = (("message", "headers"), ("authentication",), ("envelope",), ("attachments",))


@router.get("/inbox", responses=errors())
async def list_inbox(
    services: ServicesDep,
    tenant: TenantDep,
    q: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Response:
    """Newest first; ``q`` matches subject, From, To and the envelope sender."""
    records, next_cursor = await services.inbox.list(tenant, query=q, limit=limit, cursor=cursor)
    return page_response((encode_item(summary_json(r)) for r in records), next_cursor)


@router.delete("/inbox", responses=errors())
async def clear_inbox(services: ServicesDep, tenant: TenantDep) -> dict[str, int]:
    return {"deleted": await services.inbox.clear(tenant)}


@router.get("/inbox/{capture_id}", responses=errors(404))
async def get_captured(capture_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    """The capture event (attachments listed without content)."""
    event = capture_event(await services.inbox.get(capture_id, tenant))
    return json_response(encode_item(event, user_fields=_USER_FIELDS))


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
    capture_id: str, services: ServicesDep, tenant: TenantDep
) -> dict[str, int]:
    await services.inbox.delete(capture_id, tenant)
    return {"deleted": 1}


def summary_json(r: CapturedRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "received_at": r.received_at.isoformat().replace("+00:00", "Z"),
        "source": r.source,
        "from": r.from_header,
        "to": r.to_header,
        "subject": r.subject,
        "envelope": {"from": r.mail_from, "to": r.rcpt_to},
        "size": r.size,
        "attachments": len(r.attachments),
    }
