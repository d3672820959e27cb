"""``/api/v1/inbox``: captured mail — list, read, raw source, attachments, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from mailgate.inbox import capture_event
from mailgate.store import CapturedRecord
from mailgate.web.deps import ServicesDep, TenantDep, require_token

__all__ = ["router"]

router = APIRouter(tags=["inbox"], dependencies=[Depends(require_token)])


@router.get("/inbox")
async def list_inbox(
    services: ServicesDep,
    tenant: TenantDep,
    q: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Newest first; ``q`` matches subject, From, To and the envelope sender."""
    records, next_cursor = await services.inbox.store.list(
        tenant, query=q, limit=limit, cursor=cursor
    )
    return {"items": [summary_json(r) for r in records], "next_cursor": next_cursor}


@router.delete("/inbox")
async def clear_inbox(services: ServicesDep, tenant: TenantDep) -> dict[str, int]:
    return {"deleted": await services.inbox.store.clear(tenant)}


@router.get("/inbox/{capture_id}")
async def get_captured(capture_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """The capture event (attachments listed without content)."""
    return capture_event(await services.inbox.store.get(capture_id, tenant))


@router.get(
    "/inbox/{capture_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}}},
)
async def get_raw(capture_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    raw = await services.inbox.store.raw(capture_id, tenant)
    return Response(raw, media_type="message/rfc822")


@router.get("/inbox/{capture_id}/attachments/{index}", response_class=Response)
async def get_attachment(
    capture_id: str, index: int, services: ServicesDep, tenant: TenantDep
) -> Response:
    """The attachment's exact decoded bytes, with its content type."""
    att = await services.inbox.attachment(capture_id, index, tenant)
    headers = {}
    if att.filename:
        headers["Content-Disposition"] = _disposition(att.filename)
    return Response(att.content, media_type=att.content_type, headers=headers)


@router.delete("/inbox/{capture_id}")
async def delete_captured(
    capture_id: str, services: ServicesDep, tenant: TenantDep
) -> dict[str, int]:
    await services.inbox.store.delete(capture_id, tenant)
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


def _disposition(filename: str) -> str:
    """RFC 6266 with an RFC 8187 ``filename*`` for non-ASCII names."""
    from urllib.parse import quote

    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
