"""The inbox pages of the admin UI (issue 11): captured mail, as Mailpit shows it.

``/inbox`` lists the newest first, a page at a time (the store's cursor), searched
with Mailpit's syntax (:mod:`mailgate.inbox.search`) and per inbox (``?inbox=``); its
first page follows the inbox live (``/ui/events/inbox``). ``/inbox/{id}`` is one
message, a tab at a time (``?tab=``: only what that tab shows is read and parsed).
The UI is the admin: it sees the ``default`` tenant's mail. Everything that changes
mail is a POST (CSRF-checked by the guard); deleting many has a confirm page.

The captured AUTH password is shown masked: it is a development capture (what an app
under test sent), so the user may reveal it, but only by a POST (never in a URL, a
history entry or a page cached by a GET) and only on the message page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from mailgate.deliver.ssrf import NetGuard
from mailgate.errors import InvalidInput, NotFound
from mailgate.inbox.mailbox import Mailbox, search_terms
from mailgate.inbox.release import ReleaseRefused
from mailgate.inbox.service import Download
from mailgate.mime.parts import MimePart
from mailgate.store import CapturedRecord
from mailgate.ui.context import UiSession, render, ui_context
from mailgate.ui.guard import UiSessionDep, form_fields, ui_guard
from mailgate.ui.inbox_frame import frame_headers, inline_images, referenced, woken_stream

if TYPE_CHECKING:  # mailgate.web imports this package
    from mailgate.web.api_mailpit import MailpitOptions
    from mailgate.web.services import Services

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])

TENANT = "default"  #: the UI is the admin
PAGE = 50  #: messages per list page
RAW_SHOWN = 1_000_000  #: characters of the source shown; the download has it all
TABS = ("html", "text", "headers", "raw", "attachments", "links", "auth")
TAB_NAMES = {
    "html": "HTML",
    "text": "Text",
    "headers": "Headers",
    "raw": "Source",
    "attachments": "Attachments",
    "links": "Links",
    "auth": "AUTH",
}


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int) -> str:
    """Bytes as a person reads them (1,000 per kB, as Mailpit shows sizes)."""
    if n < 1000:
        return f"{n} B"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1_000_000:.1f} MB"


#: what every inbox template may call
FORMAT = {"when": _when, "size": _size, "tab_names": TAB_NAMES}


def _services(request: Request) -> Services:
    return request.state.services  # type: ignore[no-any-return]


def _mailpit(request: Request) -> MailpitOptions | None:
    """Release and the link-check guard, as the Mailpit API has them (web/app.py)."""
    return getattr(request.app.state, "mailpit", None)


def _web() -> Any:
    """The web layer's Mailpit helpers, imported when first used: ``mailgate.web``
    imports this package, so a module-level import would be circular."""
    from mailgate.web import downloads, mailpit_checks, mailpit_json

    return downloads, mailpit_checks, mailpit_json


def _list_url(box: str | None, query: str = "", **more: str) -> str:
    params = {k: v for k, v in {"inbox": box or "", "q": query, **more}.items() if v}
    return "/inbox" + ("?" + urlencode(params) if params else "")


# --- the list ---------------------------------------------------------------------------


async def _list_view(
    request: Request, box: str | None, query: str, cursor: str | None
) -> dict[str, Any]:
    """The list page's data: one page of mail, the inboxes, or why the search failed."""
    services = _services(request)
    records: list[CapturedRecord] = []
    next_cursor, error = None, None
    try:
        records, next_cursor = await services.inbox.list(
            TENANT, query=query or None, box=box, limit=PAGE, cursor=cursor
        )
    except InvalidInput as exc:
        error = str(exc)
    boxes = await services.inbox.boxes(TENANT)
    return {
        **FORMAT,
        "records": records,
        "boxes": boxes,
        "box": box,
        "query": query,
        "error": error,
        "cursor": cursor,
        "older": _list_url(box, query, cursor=next_cursor) if next_cursor else None,
        "newest": _list_url(box, query),
        "all_url": _list_url(None, query),
        "unsearched": _list_url(box),
        "box_url": lambda name: _list_url(name, query),
    }


def _fragments(request: Request, view: dict[str, Any], csrf: str) -> dict[str, str]:
    ui = ui_context(request)
    return {
        "rows": ui.fragment("inbox/rows.html", csrf=csrf, **view),
        "boxes": ui.fragment("inbox/boxes.html", **view),
    }


@router.get("/inbox")
async def inbox_list(
    request: Request,
    session: UiSessionDep,
    q: str = "",
    inbox: str = "",
    cursor: str | None = None,
) -> HTMLResponse:
    view = await _list_view(request, inbox or None, q.strip(), cursor)
    stream = None
    if cursor is None and view["error"] is None:  # only the first page changes live
        stream = "/ui/events/inbox?" + urlencode({"inbox": inbox, "q": q.strip()})
    fragments = _fragments(request, view, session.csrf)
    return render(
        request,
        "inbox/list.html",
        session,
        title="Inbox",
        stream=stream,
        fragments=fragments,
        **view,
    )


@router.get("/ui/events/inbox")
async def inbox_events(
    request: Request, session: UiSessionDep, q: str = "", inbox: str = ""
) -> StreamingResponse:
    """The list's first page and the inbox switcher as Server-Sent Events, each when it
    changed: rendered again whenever the inbox hears of a change."""
    ui = ui_context(request)
    sub = _services(request).inbox.subscribe(TENANT)

    async def fragments() -> dict[str, str]:
        view = await _list_view(request, inbox or None, q.strip(), None)
        return _fragments(request, view, session.csrf)

    stream = woken_stream(fragments, sub, ui.options.refresh, lambda: ui.options.pulse.closed)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
        background=BackgroundTask(sub.close),  # also when the stream never started
    )


@router.get("/inbox/clear")
async def confirm_clear(
    request: Request, session: UiSessionDep, q: str = "", inbox: str = ""
) -> HTMLResponse:
    """The confirm step of deleting a search's result, or a whole inbox, or everything."""
    box, query = inbox or None, q.strip()
    mailbox = Mailbox.of(_services(request).inbox)
    error, count = None, 0
    try:
        terms = search_terms(query) if query else ()
        count = (await mailbox.bulk.counts(TENANT, box=box, query=terms)).total
    except InvalidInput as exc:
        error = str(exc)
    return render(
        request,
        "inbox/clear.html",
        session,
        title="Delete messages",
        box=box,
        query=query,
        count=count,
        error=error,
        back=_list_url(box, query),
        current="/inbox",
    )


@router.post("/inbox/clear")
async def clear(request: Request) -> Response:
    form = await form_fields(request)
    box, query = form.get("inbox") or None, (form.get("q") or "").strip()
    await _services(request).inbox.clear(TENANT, box=box, query=query or None)
    return RedirectResponse(_list_url(box), status_code=303)


# --- one message ------------------------------------------------------------------------


async def _message_page(
    request: Request,
    session: UiSession,
    capture_id: str,
    tab: str,
    *,
    mark_read: bool = True,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    services = _services(request)
    try:
        record = await services.inbox.get(capture_id, TENANT, mark_read=mark_read)
    except NotFound:
        return render(
            request,
            "inbox/missing.html",
            session,
            title="Not found",
            status_code=404,
            current="/inbox",
        )
    if tab not in TABS:
        tab = "html" if record.html else "text"
    view: dict[str, Any] = {**FORMAT, "record": record, "tab": tab, "tabs": TABS, **extra}
    view["cc"] = ", ".join(_header(record, "Cc"))
    view["date_header"] = next(iter(_header(record, "Date")), "")
    view.update(await _tab_view(request, record, tab))
    mailpit = _mailpit(request)
    view["release_ready"] = mailpit is not None and mailpit.release is not None
    return render(
        request,
        "inbox/message.html",
        session,
        title=record.subject or "(no subject)",
        current="/inbox",
        status_code=status_code,
        **view,
    )


def _header(record: CapturedRecord, name: str) -> list[str]:
    """The values of header field ``name`` as captured (names compared ignoring case)."""
    found: list[str] = []
    for key, value in record.headers.items():
        if key.lower() == name.lower():
            found += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return found


async def _tab_view(request: Request, record: CapturedRecord, tab: str) -> dict[str, Any]:
    """What one tab shows, read only for that tab."""
    services = _services(request)
    _, _, mailpit_json = _web()
    if tab == "headers":
        head = await services.inbox.header_block(record.id, TENANT)
        return {"headers": mailpit_json.headers_json(head)}
    if tab == "raw":  # (at most 4 octets a character: the start is enough)
        raw = await services.inbox.raw(record.id, TENANT, head=RAW_SHOWN * 4)
        text = raw.decode("utf-8", "replace")
        return {"raw": text[:RAW_SHOWN], "raw_cut": len(text) > RAW_SHOWN or len(raw) < record.size}
    if tab == "links":
        return {"links": await services.inbox.links(record.id, TENANT)}
    return {}


@router.get("/inbox/{capture_id}")
async def message(
    capture_id: str, request: Request, session: UiSessionDep, tab: str = ""
) -> HTMLResponse:
    """One message; opening it marks it read, as Mailpit does."""
    return await _message_page(request, session, capture_id, tab)


@router.get("/inbox/{capture_id}/html")
async def message_html(capture_id: str, request: Request, remote: bool = False) -> Response:
    """The HTML part for the sandboxed iframe (see :mod:`mailgate.ui.inbox_frame`), its
    ``cid:`` images inlined; a big message's read from their files as it is sent."""
    services = _services(request)
    record = await services.inbox.get(capture_id, TENANT)
    html = record.html or ""
    images: Sequence[tuple[MimePart, Download]] = ()
    if "cid:" in html:
        images = await services.inbox.part_downloads(capture_id, TENANT, referenced(html))
    downloads, _, _ = _web()
    page = inline_images(html, images, downloads.safe_media_type)
    request.state.ui_page = False  # its own headers: the UI's forbid framing it
    headers = {**frame_headers(remote=remote), "Content-Type": "text/html; charset=utf-8"}
    files = [d.file for _, d in images if d.file is not None]
    if not files:
        return Response(b"".join(page), headers=headers)
    response: Response = downloads.stream_response(page, files, headers)
    return response


@router.get("/inbox/{capture_id}/attachments/{index}")
async def attachment(capture_id: str, index: int, request: Request) -> Response:
    """The attachment's exact bytes, always as a download (web/downloads.py)."""
    att = await _services(request).inbox.attachment_download(capture_id, index, TENANT)
    downloads, _, _ = _web()
    headers = downloads.download_headers(att.filename, att.content_type, index)
    response: Response = downloads.download_response(att, headers)
    return response


@router.get("/inbox/{capture_id}/raw")
async def raw_source(capture_id: str, request: Request) -> Response:
    raw = await _services(request).inbox.raw_download(capture_id, TENANT)
    downloads, _, _ = _web()
    headers = downloads.download_headers(f"{capture_id}.eml", "message/rfc822", 0)
    response: Response = downloads.download_response(raw, headers)
    return response


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


@router.post("/inbox/{capture_id}/reveal")
async def reveal_password(capture_id: str, request: Request, session: UiSessionDep) -> Response:
    """The captured AUTH password, shown on purpose (see the module's docstring)."""
    record = await _services(request).inbox.get(capture_id, TENANT)
    password = (record.auth or {}).get("password") or ""
    if not _is_htmx(request):
        return await _message_page(
            request, session, capture_id, "auth", mark_read=False, reveal=True, password=password
        )
    return HTMLResponse(ui_context(request).fragment("inbox/password.html", password=password))


@router.post("/inbox/{capture_id}/links/check")
async def check_links(capture_id: str, request: Request, session: UiSessionDep) -> Response:
    """Each link asked for its status (Mailpit's link-check: private addresses refused
    unless ``inbox.link_check_private``)."""
    mailpit = _mailpit(request)
    record = await _services(request).inbox.get(capture_id, TENANT)
    _, mailpit_checks, _ = _web()
    guard = mailpit.link_guard if mailpit is not None else NetGuard()
    result = await mailpit_checks.link_check(record.text, record.html, follow=False, guard=guard)
    checked = {item["URL"]: item for item in result["Links"]}
    return await _message_page(request, session, capture_id, "links", checked=checked)


@router.post("/inbox/{capture_id}/release")
async def release(capture_id: str, request: Request, session: UiSessionDep) -> Response:
    """A copy queued to the addresses given (comma-separated), through the Mailpit
    release (:mod:`mailgate.inbox.release`): the queued message, or why not."""
    services, mailpit = _services(request), _mailpit(request)
    to = [a.strip() for a in (await form_fields(request)).get("to", "").split(",") if a.strip()]
    result: dict[str, Any] = {}
    try:
        if mailpit is None or mailpit.release is None:
            raise ReleaseRefused("Release is not configured")
        record = await services.inbox.get(capture_id, TENANT)
        raw = await services.inbox.raw(capture_id, TENANT)
        result["released"] = await mailpit.release.release(record, raw, to)
    except ReleaseRefused as exc:
        result["release_error"] = str(exc)
    if _is_htmx(request):
        return HTMLResponse(ui_context(request).fragment("inbox/released.html", **result))
    return await _message_page(request, session, capture_id, "", mark_read=False, **result)


@router.post("/inbox/{capture_id}/tags")
async def set_tags(capture_id: str, request: Request) -> Response:
    form = await form_fields(request)
    tags = [t.strip() for t in form.get("tags", "").split(",") if t.strip()]
    await _services(request).inbox.update(capture_id, TENANT, tags=tags)
    tab = form.get("tab", "")
    return RedirectResponse(f"/inbox/{capture_id}" + (f"?tab={tab}" if tab in TABS else ""), 303)


@router.post("/inbox/{capture_id}/unread")
async def mark_unread(capture_id: str, request: Request) -> Response:
    """Back to the list (opening the message again would mark it read)."""
    record = await _services(request).inbox.update(capture_id, TENANT, read=False)
    return RedirectResponse(_list_url(record.box), status_code=303)


@router.post("/inbox/{capture_id}/delete")
async def delete(capture_id: str, request: Request) -> Response:
    form = await form_fields(request)
    await _services(request).inbox.delete(capture_id, TENANT)
    back = form.get("back", "")
    return RedirectResponse(back if back.startswith("/inbox") else "/inbox", status_code=303)
