"""``/api/v1/inbox``: captured mail — list, read, raw source, attachments, delete; and
the test API: wait for a message, its links and one-time codes, live events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from mailgate.errors import InvalidInput
from mailgate.inbox import capture_event
from mailgate.inbox.events import EventKind, InboxEvent, Subscription
from mailgate.inbox.extract import MAX_PATTERN_CHARS
from mailgate.inbox.sorting import MAX_TAGS
from mailgate.inbox.wait import Since, WaitFor
from mailgate.store import CapturedRecord
from mailgate.web.deps import CursorParam, ServicesDep, TenantDep, require_token
from mailgate.web.downloads import download_headers, download_response
from mailgate.web.rendering import encode, encode_item, json_response, page_response
from mailgate.web.responses import ErrorOut, errors

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
    cursor: CursorParam = None,
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


WAIT_MAX_SECONDS = 300.0  #: the longest ``GET /inbox/wait`` holds a request
KEEPALIVE_SECONDS = 15.0  #: an event stream's comment line when nothing else was sent


@router.get(
    "/inbox/wait",
    responses={
        **errors(),
        408: {"model": ErrorOut, "description": "no matching message came within timeout"},
    },
)
async def wait_for_message(
    services: ServicesDep,
    tenant: TenantDep,
    to: Annotated[
        str | None,
        Query(max_length=320, description="a recipient (envelope or To); no @: part of one"),
    ] = None,
    sender: Annotated[
        str | None,
        Query(alias="from", max_length=320, description="the sender (envelope or From)"),
    ] = None,
    subject: Annotated[str | None, Query(max_length=998, description="part of the subject")] = None,
    q: SearchParam = None,
    inbox: InboxParam = None,
    since: Annotated[
        str | None,
        Query(max_length=64, description="only mail after this message id or ISO 8601 time"),
    ] = None,
    seconds: Annotated[
        float, Query(alias="timeout", ge=0, le=WAIT_MAX_SECONDS, description="seconds")
    ] = 30.0,
) -> Response:
    """The newest captured message that matches (as ``GET /inbox/{id}`` answers it, and
    marked read), as soon as there is one; 408 after ``timeout`` seconds. Without
    ``since`` a message already there counts; ``to``, ``from`` and ``subject`` ignore
    case, ``q`` is the inbox list's search."""
    try:
        after = Since.parse(since) if since else None
    except InvalidInput as exc:
        raise _refused("since", exc) from None
    want = WaitFor(to=to, sender=sender, subject=subject, query=q, box=inbox, since=after)
    try:
        record = await services.inbox.wait(tenant, want, within=seconds)
    except InvalidInput as exc:
        raise _bad_query(exc) from None
    if record is None:
        return JSONResponse({"detail": f"no matching message within {seconds:g} s"}, 408)
    return json_response(encode_item(capture_event(record), user_fields=_USER_FIELDS))


@router.get("/inbox/events", response_class=StreamingResponse, include_in_schema=False)
async def inbox_events(
    services: ServicesDep, tenant: TenantDep, inbox: InboxParam = None
) -> StreamingResponse:
    """Server-Sent Events of the tenant's inbox in this process: ``event: new`` (the
    summary, as in ``GET /inbox``), ``event: delete`` (``{"id"}``, or ``{"all": true,
    "inbox", "deleted"}`` for a clear), ``event: prune`` (``{"inbox", "deleted"}``: that
    many of the inbox's oldest went to its retention limits) and a comment every 15 s.
    A client that falls behind is disconnected (``retry`` tells an EventSource when to
    come back).

    Not in the OpenAPI schema: it has no form for an endless stream of events.
    """
    sub = services.inbox.subscribe(tenant)

    async def unsubscribe() -> None:  # also when the stream never started
        sub.close()

    return StreamingResponse(
        _event_stream(sub, inbox),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(unsubscribe),
    )


async def _event_stream(sub: Subscription, box: str | None) -> AsyncIterator[bytes]:
    with sub:
        yield b"retry: 2000\n\n"
        while True:
            event = await sub.next(within=KEEPALIVE_SECONDS)
            if sub.closed or (event is not None and event.kind is EventKind.LOST):
                return  # the gateway is stopping, or this reader fell behind
            if event is None:
                yield b": keep-alive\n\n"
            elif frame := _sse_frame(event, box):
                yield frame


def _sse_frame(event: InboxEvent, box: str | None) -> bytes | None:
    """``event`` as one SSE frame (JSON has no raw newline), or None if not ``box``'s."""
    if event.kind is EventKind.NEW and event.record is not None:
        if box is not None and event.record.box != box:
            return None
        return b"event: new\ndata: " + encode_item(summary_json(event.record)) + b"\n\n"
    if event.kind is EventKind.DELETE:
        return b"event: delete\ndata: " + encode({"id": event.capture_id}) + b"\n\n"
    if event.kind is EventKind.CLEAR and (box is None or event.box in (None, box)):
        cleared = {"all": True, "inbox": event.box, "deleted": event.count}
        return b"event: delete\ndata: " + encode(cleared) + b"\n\n"
    if event.kind is EventKind.PRUNE and box in (None, event.box):
        pruned = {"inbox": event.box, "deleted": event.count}
        return b"event: prune\ndata: " + encode(pruned) + b"\n\n"
    return None


def _refused(name: str, exc: InvalidInput) -> RequestValidationError:
    """A query parameter that cannot work, as FastAPI's own 422 says what is wrong."""
    problem = {"type": "value_error", "loc": ["query", name], "msg": str(exc)}
    return RequestValidationError([problem])


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
    download = await services.inbox.raw_download(capture_id, tenant)
    return download_response(download, {"content-type": "message/rfc822"})


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
    att = await services.inbox.attachment_download(capture_id, index, tenant)
    return download_response(att, download_headers(att.filename, att.content_type, index))


@router.delete("/inbox/{capture_id}", responses=errors(404))
async def delete_captured(
    capture_id: str, services: ServicesDep, tenant: TenantDep, inbox: InboxParam = None
) -> dict[str, int]:
    await services.inbox.delete(capture_id, tenant, box=inbox)
    return {"deleted": 1}


class LinkOut(BaseModel):
    url: str
    text: str | None = Field(
        description="the anchor text, whitespace collapsed (an image's alt when it has no"
        " text); null when the URL is only in the text part or bare in the HTML"
    )


class LinksOut(BaseModel):
    links: list[LinkOut]


class CodeOut(BaseModel):
    code: str
    score: float = Field(description="0–1, from how near the words announcing a code are")
    context: str = Field(description="the line it stands on, shortened around it")


class CodesOut(BaseModel):
    codes: list[CodeOut] = Field(description="best first")


@router.get("/inbox/{capture_id}/links", response_model=LinksOut, responses=errors(404))
async def get_links(
    capture_id: str, services: ServicesDep, tenant: TenantDep, inbox: InboxParam = None
) -> Response:
    """Every link of the HTML (``<a href>``, and bare http(s) URLs in its text) and of
    the text part, each URL once with the first anchor text it was given."""
    links = await services.inbox.links(capture_id, tenant, box=inbox)
    body = {"links": [{"url": link.url, "text": link.text} for link in links]}
    return json_response(encode(body))


@router.get("/inbox/{capture_id}/codes", response_model=CodesOut, responses=errors(404))
async def get_codes(
    capture_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    inbox: InboxParam = None,
    pattern: Annotated[
        str | None,
        Query(
            max_length=MAX_PATTERN_CHARS,
            description="a regular expression a whole word that is a code matches (instead"
            " of inbox.code_pattern), besides 4–8 digit numbers",
        ),
    ] = None,
) -> Response:
    """The message's likely one-time codes, best first (README, "Links and codes")."""
    try:
        codes = await services.inbox.codes(capture_id, tenant, box=inbox, pattern=pattern)
    except InvalidInput as exc:
        raise _refused("pattern", exc) from None
    body = {"codes": [{"code": c.code, "score": c.score, "context": c.context} for c in codes]}
    return json_response(encode(body))


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
