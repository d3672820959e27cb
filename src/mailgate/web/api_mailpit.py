"""``/mailpit``: Mailpit 1.30's API, so Mailpit's clients work with the base URL
``http://HOST:PORT/mailpit`` — or ``/mailpit/{inbox}``, where one inbox is the whole
mailbox (parallel test runs then never see each other's mail).

A mounted application of its own, kept out of ``/openapi.json`` (its Go-shaped
answers, plain-text errors and case-insensitive JSON bodies are Mailpit's contract,
not this API's): same routes, JSON field names and statuses as Mailpit — ``200`` with
a plain-text ``ok`` for changes, ``400`` with a plain-text reason for bad input,
``404 page not found``. Repeated slashes in a path are collapsed (``//api/v1/…``), as
clients with a trailing slash in their base URL ask. The API token is checked as on
``/api/v1`` (``Authorization: Bearer``, ``X-API-Token``), and also as the password of
HTTP Basic authentication, which Mailpit's clients send (``http://user:TOKEN@host``).
What differs from Mailpit is listed in the README ("Using Mailpit's clients").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mailgate import __version__
from mailgate.clock import Clock
from mailgate.errors import InvalidInput, NotFound, StoreUnavailable
from mailgate.inbox import CaptureMeta
from mailgate.inbox.mailbox import Mailbox, search_terms
from mailgate.inbox.release import ReleaseRefused
from mailgate.ingest.chaos import Stage, Trigger, Triggers, trigger
from mailgate.mime.parts import cid_references
from mailgate.web.deps import ServicesDep, TenantDep, admin_only
from mailgate.web.downloads import download_response, filename_params, safe_media_type
from mailgate.web.mailpit_checks import html_check, link_check
from mailgate.web.mailpit_events import router as events_router
from mailgate.web.mailpit_json import headers_json, message_json, summary_json
from mailgate.web.mailpit_options import MailpitOptions
from mailgate.web.mailpit_send import Sendable, SendRefused, sendable

__all__ = ["MailpitOptions", "create_mailpit_app"]

_BOX = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SLASHES = re.compile(r"/{2,}")
_NOT_FOUND = "404 page not found"
_INT64_MAX = 2**63 - 1  #: Go's int, and the most OFFSET and LIMIT take


def create_mailpit_app(options: MailpitOptions | None = None) -> ASGIApp:
    """The application to mount at ``/mailpit``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.mailpit = options or MailpitOptions()
    app.include_router(router)
    app.include_router(router, prefix="/{inbox}")
    app.include_router(events_router)  # the WebSocket of live changes
    app.include_router(events_router, prefix="/{inbox}")
    _plain_errors(app)
    return _MailpitRequests(app)


class _MailpitRequests:
    """Pure ASGI: repeated slashes collapsed (Mailpit's router cleans paths) and HTTP
    Basic credentials read as the API token (their password)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            root = scope.get("root_path", "")
            path: str = scope["path"]
            rest = path[len(root) :] if path.startswith(root) else path
            scope["path"] = root + _SLASHES.sub("/", rest)
            scope["raw_path"] = scope["path"].encode()
            scope["headers"] = [*scope["headers"], *_basic_password_as_token(scope["headers"])]
        await self.app(scope, receive, send)


def _basic_password_as_token(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``X-API-Token``: the password of HTTP Basic credentials, as Mailpit's clients
    send the token; the ``Authorization`` header stays, for the admin user's."""
    for name, value in headers:
        if name.lower() == b"authorization" and value[:6].lower() == b"basic ":
            try:
                _, _, password = base64.b64decode(value[6:].strip(), validate=True).partition(b":")
            except (binascii.Error, ValueError):
                return []
            return [(b"x-api-token", password)] if password else []
    return []


def _plain_errors(app: FastAPI) -> None:
    """Errors as Mailpit answers them: plain text, 400 for anything wrong with input."""

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> Response:
        text = str(exc) if str(exc) == "Message not found" else _NOT_FOUND
        return PlainTextResponse(text, status_code=404)

    @app.exception_handler(InvalidInput)
    async def invalid(_: Request, exc: InvalidInput) -> Response:
        return PlainTextResponse(str(exc), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def unreadable(_: Request, exc: RequestValidationError) -> Response:
        return PlainTextResponse(_NOT_FOUND, status_code=404)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        text = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return PlainTextResponse(text, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(_: Request, exc: StoreUnavailable) -> Response:
        text = "the database is unavailable; nothing was changed, try again later"
        return PlainTextResponse(text, status_code=503, headers={"Retry-After": "5"})


@dataclass(frozen=True, slots=True)
class Ctx:
    """One request's mailbox: the tenant's mail, or one inbox's."""

    tenant: str
    box: str | None
    mailbox: Mailbox
    options: MailpitOptions

    async def resolve(self, capture_id: str, request: Request) -> str:
        """``latest`` (of what ``?query=`` matches) as an id; other ids as they are."""
        if capture_id != "latest":
            return capture_id
        query = request.query_params.get("query", "").strip()
        terms = search_terms(query, request.query_params.get("tz")) if query else ()
        return await self.mailbox.latest(self.tenant, self.box, terms)


async def _ctx(request: Request, services: ServicesDep, tenant: TenantDep) -> Ctx:
    box = request.path_params.get("inbox")
    if box is not None and not _BOX.match(box):
        raise NotFound(_NOT_FOUND)
    options = request.app.state.mailpit
    assert isinstance(options, MailpitOptions)
    return Ctx(tenant, box, Mailbox.of(services.inbox), options)


CtxDep = Annotated[Ctx, Depends(_ctx)]
router = APIRouter()


def ok() -> Response:
    return PlainTextResponse("ok")


def _int(request: Request, name: str, default: int) -> int:
    """A whole number from the query, as Go's ``strconv.Atoi`` reads it; else ``default``.

    Past 64 bits Atoi fails and Mailpit takes the default (a ``start`` past every message
    showed the first page); here such a number is the largest 64 bits hold, what the
    databases' OFFSET and LIMIT take: a ``start`` past the end is an empty page, as one
    within 64 bits is, and a ``limit`` is everything. Bound whole, it was out of
    PostgreSQL's BIGINT range (a 500)."""
    try:
        value = int(request.query_params.get(name, ""))
    except ValueError:
        return default
    return min(value, _INT64_MAX) if value >= 0 else default


async def _body(request: Request) -> dict[str, Any] | None:
    """The JSON body with its keys lower-cased (Go matches them ignoring case); a form
    body (the PyPI client sends one) as such a dict too; None when there is none."""
    raw = await request.body()
    if not raw.strip():
        return None
    if "form-urlencoded" in request.headers.get("content-type", ""):
        form = parse_qs(raw.decode("utf-8", "replace"))
        lists = ("ids", "to", "tags")
        return {k.lower(): v if k.lower() in lists else v[-1] for k, v in form.items()}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return {str(k).lower(): v for k, v in data.items()}


def _strings(data: dict[str, Any] | None, key: str) -> list[str] | None:
    value = (data or {}).get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{key} must be an array of strings")
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


# --- messages ---------------------------------------------------------------------------


@router.get("/api/v1/messages")
async def list_messages(request: Request, ctx: CtxDep) -> Response:
    """Newest first from ``start`` (``limit``, default 50), with the mailbox's totals."""
    start, limit = _int(request, "start", 0), _int(request, "limit", 50)
    page = await ctx.mailbox.page(ctx.tenant, ctx.box, start=start, limit=limit)
    return await asyncio.to_thread(_summary_page, page, start, search=False)


@router.get("/api/v1/search")
async def search(request: Request, ctx: CtxDep) -> Response:
    query = request.query_params.get("query", "").strip()
    if not query:
        raise InvalidInput("Error: no search query")
    terms = search_terms(query, request.query_params.get("tz"))
    start, limit = _int(request, "start", 0), _int(request, "limit", 50)
    page = await ctx.mailbox.page(ctx.tenant, ctx.box, query=terms, start=start, limit=limit)
    return await asyncio.to_thread(_summary_page, page, start, search=True)


def _summary_page(page: Any, start: int, *, search: bool) -> Response:
    """The page as JSON, made in a worker thread: the summaries of 50 hostile messages
    (20,000 Cc addresses, a 200 KB snippet source each: 4 MB) held the event loop 0.9 s."""
    return JSONResponse(
        {
            "total": page.mailbox.total,
            "unread": page.mailbox.unread,
            "count": len(page.records),  # legacy, still read by older clients
            "messages_count": page.matched.total,
            "messages_unread": page.matched.unread,
            "start": start,
            "tags": page.tags,
            "messages": [summary_json(r) for r in page.records],
        }
    )


@router.put("/api/v1/messages")
async def set_read_status(request: Request, ctx: CtxDep) -> Response:
    """``{Read, IDs}`` or ``{Read, Search}``; neither: every message."""
    data = await _body(request)
    if data is None:
        raise InvalidInput("EOF")
    ids, query = _strings(data, "ids"), str(data.get("search") or "").strip()
    if ids and query:
        raise InvalidInput("You may specify either IDs or a search query, not both")
    read = _flag(data.get("read", False))
    terms = search_terms(query, request.query_params.get("tz")) if query else ()
    await ctx.mailbox.set_read(ctx.tenant, ctx.box, read, ids=ids or None, query=terms)
    return ok()


@router.delete("/api/v1/messages")
async def delete_messages(request: Request, ctx: CtxDep) -> Response:
    """``{IDs}``; no body or no IDs: every message of the mailbox."""
    try:
        ids = _strings(await _body(request), "ids")
    except InvalidInput:
        ids = None  # Mailpit deletes everything when it cannot read the body
    await ctx.mailbox.delete(ctx.tenant, ctx.box, ids or None)
    return ok()


@router.delete("/api/v1/search")
async def delete_search(request: Request, ctx: CtxDep) -> Response:
    query = request.query_params.get("query", "").strip()
    if not query:
        raise InvalidInput("Error: no search query")
    search_terms(query, request.query_params.get("tz"))  # an unreadable date: 400
    await ctx.mailbox.delete_matching(ctx.tenant, ctx.box, query)
    return ok()


# --- one message ------------------------------------------------------------------------


@router.get("/api/v1/message/{capture_id}")
async def get_message(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    """The message (``latest`` allowed); marks it read."""
    capture_id = await ctx.resolve(capture_id, request)
    record = await ctx.mailbox.get(capture_id, ctx.tenant, ctx.box, mark_read=True)
    parts = await ctx.mailbox.parts(capture_id, ctx.tenant, ctx.box)
    return await asyncio.to_thread(lambda: JSONResponse(message_json(record, parts)))


@router.get("/api/v1/message/{capture_id}/headers")
async def get_headers(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    capture_id = await ctx.resolve(capture_id, request)
    head = await ctx.mailbox.header_block(capture_id, ctx.tenant, ctx.box)
    return JSONResponse(headers_json(head))


@router.get("/api/v1/message/{capture_id}/raw")
async def get_raw(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    """The source as it arrived; ``?dl=1`` as a download named ``{id}.eml``."""
    capture_id = await ctx.resolve(capture_id, request)
    raw = await ctx.mailbox.raw_download(capture_id, ctx.tenant, ctx.box)
    headers = {"content-type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    if request.query_params.get("dl") == "1":
        headers["Content-Disposition"] = f'attachment; filename="{capture_id}.eml"'
    return download_response(raw, headers)


@router.get("/api/v1/message/{capture_id}/part/{part_id}")
async def get_part(capture_id: str, part_id: str, request: Request, ctx: CtxDep) -> Response:
    """The part's decoded bytes, with its own content type (a big message's through a
    file, :meth:`Inbox.part_downloads`). Never run on this origin: ``nosniff`` and a
    ``sandbox`` CSP, whatever the type."""
    capture_id = await ctx.resolve(capture_id, request)
    part = await ctx.mailbox.part_download(capture_id, ctx.tenant, ctx.box, part_id)
    headers = {
        "Content-Type": _typed(safe_media_type(part.content_type)),
        "Content-Disposition": _named(part.filename or ""),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    return download_response(part, headers)


@router.get("/api/v1/message/{capture_id}/part/{part_id}/thumb")
async def get_thumbnail(capture_id: str, part_id: str, request: Request, ctx: CtxDep) -> Response:
    """An image part itself, not scaled (Mailpit makes a 180x120 JPEG); 400 for a part
    that is not an image."""
    capture_id = await ctx.resolve(capture_id, request)
    part = await ctx.mailbox.part_download(capture_id, ctx.tenant, ctx.box, part_id)
    media_type = safe_media_type(part.content_type)
    if not media_type.startswith("image/"):
        part.close()
        raise InvalidInput(f"part {part_id} is not an image ({part.content_type})")
    headers = {
        "Content-Type": media_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    return download_response(part, headers)


def _named(filename: str) -> str:
    """Mailpit's ``filename="…"``; a name that is not plain ASCII also as RFC 8187's
    ``filename*`` (a header is Latin-1: a name such as ``€.pdf`` was a 500)."""
    if not (filename.isascii() and filename.isprintable()):
        return filename_params(filename)
    return 'filename="{}"'.format(re.sub(r'["\\]', "_", filename))


def _typed(media_type: str) -> str:
    """``media_type`` as Starlette's ``Response`` names it (a text type with its UTF-8
    charset), as a part was served before it could come from a file."""
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        return f"{media_type}; charset=utf-8"
    return media_type


@router.get("/api/v1/message/{capture_id}/link-check")
async def check_links(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    capture_id = await ctx.resolve(capture_id, request)
    record = await ctx.mailbox.get(capture_id, ctx.tenant, ctx.box)
    follow = request.query_params.get("follow", "") in ("true", "1")
    result = await link_check(record.text, record.html, follow=follow, guard=ctx.options.link_guard)
    return JSONResponse(result)


@router.get("/api/v1/message/{capture_id}/html-check")
async def check_html(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    capture_id = await ctx.resolve(capture_id, request)
    record = await ctx.mailbox.get(capture_id, ctx.tenant, ctx.box)
    if not record.html:
        raise InvalidInput("message does not contain HTML")
    return JSONResponse(await asyncio.to_thread(html_check, record.html))


@router.post("/api/v1/message/{capture_id}/release")
async def release(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    """``{To}``: a copy queued for delivery (see :mod:`mailgate.inbox.release`)."""
    capture_id = await ctx.resolve(capture_id, request)
    record = await ctx.mailbox.get(capture_id, ctx.tenant, ctx.box)
    raw = await ctx.mailbox.raw(capture_id, ctx.tenant, ctx.box)
    to = _strings(await _body(request), "to") or []
    if ctx.options.release is None:
        raise ReleaseRefused("Release is not configured")
    await ctx.options.release.release(record, raw, to)
    return ok()


@router.post("/api/v1/send")
async def send(request: Request, ctx: CtxDep) -> Response:
    """Mailpit's send request, captured as mail sent through the API; ``{ID}``. Read
    and built in a worker thread: for a 40 MB attachment (JSON, base64, the message)
    that held every other request 0.7 s."""
    raw = await request.body()
    try:
        built = await asyncio.to_thread(_sendable, raw, ctx.mailbox.inbox.clock)
    except (ValueError, SendRefused) as exc:
        return JSONResponse({"Error": str(exc)}, status_code=400)
    client = request.client.host if request.client else None
    meta = CaptureMeta(
        mail_from=built.mail_from,
        rcpt_to=built.recipients,
        source="api",
        remote_addr=client,
        tenant=ctx.tenant,
    )
    record = await ctx.mailbox.capture(built.raw, meta, ctx.box)
    return JSONResponse({"ID": record.id})


def _sendable(raw: bytes, clock: Clock) -> Sendable:
    return sendable(json.loads(raw or b"null"), clock)


# --- tags -------------------------------------------------------------------------------


@router.get("/api/v1/tags")
async def get_tags(ctx: CtxDep) -> Response:
    return JSONResponse(list(await ctx.mailbox.tag_counts(ctx.tenant, ctx.box)))


@router.put("/api/v1/tags")
async def set_tags(request: Request, ctx: CtxDep) -> Response:
    """``{IDs, Tags}``: the tags replace each message's (none given: all removed)."""
    data = await _body(request)
    if data is None:
        raise InvalidInput("EOF")
    ids, tags = _strings(data, "ids") or [], _strings(data, "tags") or []
    await ctx.mailbox.set_tags(ctx.tenant, ctx.box, ids, tags)
    return ok()


@router.put("/api/v1/tags/{tag}")
async def rename_tag(tag: str, request: Request, ctx: CtxDep) -> Response:
    data = await _body(request)
    name = (data or {}).get("name")
    if not isinstance(name, str):
        raise InvalidInput("Name must be a string")
    await ctx.mailbox.rename_tag(ctx.tenant, ctx.box, tag, name)
    return ok()


@router.delete("/api/v1/tags/{tag}")
async def delete_tag(tag: str, ctx: CtxDep) -> Response:
    await ctx.mailbox.delete_tag(ctx.tenant, ctx.box, tag)
    return ok()


# --- chaos, info, web UI ------------------------------------------------------------------


@router.get("/api/v1/chaos")
async def get_chaos(ctx: CtxDep) -> Response:
    return JSONResponse(_triggers_json(ctx.options.chaos.triggers))


#: Mailpit's trigger names; it has no ``data`` stage
_CHAOS_STAGES = {"Authentication": Stage.AUTH, "Recipient": Stage.RCPT, "Sender": Stage.MAIL}


@router.put("/api/v1/chaos")
async def set_chaos(request: Request, ctx: CtxDep) -> Response:
    """Replace Mailpit's three triggers; one left out is reset (0 %), ``{}`` resets them
    all. The ``data`` trigger, which only ``/api/v1/chaos`` sets, is left as it is. The
    triggers are the whole gateway's: a tenant's token is refused (403)."""
    admin_only(ctx.tenant, "chaos changes the whole gateway")
    data = await _body(request) or {}
    given: dict[Stage, Trigger] = {}
    for name, stage in _CHAOS_STAGES.items():
        value = data.get(name.lower())
        if value is None:
            continue
        if not isinstance(value, dict):
            raise InvalidInput(f"{name} must be an object")
        fields = {str(k).lower(): v for k, v in value.items()}
        code, probability = fields.get("errorcode", 451), fields.get("probability", 0)
        if not isinstance(code, int) or not isinstance(probability, int):
            raise InvalidInput(f"{name}: ErrorCode and Probability must be integers")
        given[stage] = trigger(code, probability)
    triggers = ctx.options.chaos.set(given, _CHAOS_STAGES.values())
    return JSONResponse(_triggers_json(triggers))


def _triggers_json(triggers: Triggers) -> dict[str, Any]:
    """Mailpit's shape; a fractional probability set through ``/api/v1/chaos`` as it is."""
    return {name: _trigger_json(triggers.at(stage)) for name, stage in _CHAOS_STAGES.items()}


def _trigger_json(t: Trigger) -> dict[str, Any]:
    probability = float(t.probability)  # Mailpit's is whole: 50, not 50.0
    whole = probability.is_integer()
    return {"ErrorCode": t.code, "Probability": int(probability) if whole else probability}


@router.get("/api/v1/info")
async def info(ctx: CtxDep) -> Response:
    counts = await ctx.mailbox.counts(ctx.tenant, ctx.box)
    options = ctx.options
    return JSONResponse(
        {
            "Version": __version__,
            "LatestVersion": "",
            "Database": options.database,
            "DatabaseSize": options.database_size(),
            "Messages": counts.total,
            "Unread": counts.unread,
            "Tags": await ctx.mailbox.tag_counts(ctx.tenant, ctx.box),
            "RuntimeStats": {
                "Uptime": int(time.monotonic() - options.started),
                "Memory": _memory(),
                "MessagesDeleted": 0,
                "SMTPAccepted": 0,
                "SMTPAcceptedSize": 0,
                "SMTPRejected": 0,
                "SMTPIgnored": 0,
            },
        }
    )


def _memory() -> int:
    """Resident memory in bytes (Linux), else 0."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@router.get("/api/v1/webui")
async def webui(ctx: CtxDep) -> Response:
    options, release_ = ctx.options, ctx.options.release
    policy = release_.policy if release_ is not None else None
    return JSONResponse(
        {
            "Label": options.label,
            "MessageRelay": {
                "Enabled": release_ is not None and release_.enabled,
                "SMTPServer": options.relay_name,
                "ReturnPath": "",
                "AllowedRecipients": ",".join(policy.allow) if policy else "",
                "BlockedRecipients": ",".join(policy.deny) if policy else "",
                "OverrideFrom": "",
                "PreserveMessageIDs": False,
            },
            "SpamAssassin": False,
            "ChaosEnabled": True,
            "DuplicatesIgnored": False,
            "HideDeleteAllButton": False,
        }
    )


@router.options("/api/v1/{rest:path}")
async def options_ok(rest: str) -> Response:
    """Mailpit answers every OPTIONS under the API with an empty 200 (CORS preflight)."""
    return PlainTextResponse("")


# --- rendered views -----------------------------------------------------------------------


@router.get("/view/{capture_id}.html")
async def view_html(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    """The HTML part alone, its ``cid:`` images pointing at the part API; 404 without
    one. Sandboxed (CSP ``sandbox``): no script of the message runs on this origin."""
    capture_id = await ctx.resolve(capture_id, request)
    record = await ctx.mailbox.get(capture_id, ctx.tenant, ctx.box)
    if not record.html:
        raise NotFound(_NOT_FOUND)
    base = request.scope.get("root_path", "") + (f"/{ctx.box}" if ctx.box else "")
    html = record.html
    parts = await ctx.mailbox.parts(capture_id, ctx.tenant, ctx.box) if "cid:" in html else None
    urls: dict[str, str] = {}
    for part in parts.each() if parts is not None else ():
        if part.content_id:
            url = f"{base}/api/v1/message/{capture_id}/part/{part.part_id}"
            urls.setdefault(part.content_id, url)
    if urls:
        html = await asyncio.to_thread(_linked, html, urls)
    if request.query_params.get("embed") == "1":
        html = re.sub(r"<a\s", '<a target="_blank" rel="noreferrer noopener" ', html, flags=re.I)
    headers = {
        "Content-Security-Policy": "sandbox allow-popups; script-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


def _linked(html: str, urls: dict[str, str]) -> str:
    """``html`` with each ``cid:`` reference as the URL of its part, in one pass (in a
    worker thread): a ``replace`` per part, on the event loop, held every other request
    15 s for 990 parts and 3.6 MB of HTML. Of ``cid:a`` and ``cid:ab``, the part listed
    first is replaced first, as each part in turn was."""
    return cid_references(urls).sub(lambda match: urls[match.group()[4:]], html)


@router.get("/view/{capture_id}.txt")
async def view_text(capture_id: str, request: Request, ctx: CtxDep) -> Response:
    capture_id = await ctx.resolve(capture_id, request)
    record = await ctx.mailbox.get(capture_id, ctx.tenant, ctx.box)
    return PlainTextResponse(record.text or "", headers={"X-Content-Type-Options": "nosniff"})
