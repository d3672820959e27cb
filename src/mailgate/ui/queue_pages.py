"""The queue pages of the admin UI (issue 11): ``/queue`` and ``/queue/{id}``.

The list is one page of :meth:`MessagesService.list` (newest first, a cursor, never an
offset), filtered by state, account, tenant and text; the admin sees every tenant's
mail. A message's page shows its attempts, per-recipient results and its bodies: the
text as text, the HTML only inside a sandboxed frame served from its own path under
:data:`HTML_CSP` (no script, no same-origin, nothing fetched). Retry and Cancel are
htmx posts answered with the new state, or the reason it was refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from mailgate.errors import Conflict, NotFound
from mailgate.mime.parse import parse_message
from mailgate.model import Attempt, RecipientResult, State
from mailgate.store import MessageRecord
from mailgate.ui.context import UiSession, render, ui_context
from mailgate.ui.guard import UiSessionDep, ui_guard

__all__ = ["HTML_CSP", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])

#: the HTML part's own policy (CSP Level 3 ``sandbox``: a unique origin, no script,
#: no forms, no popups, even when opened outside the frame); inline styles are mail's
#: usual way of looking as sent, images only as data: URLs (a remote one would tell
#: the sender the mail was read)
HTML_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
HTML_HEADERS = {
    "Content-Security-Policy": HTML_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PAGE_SIZES = (25, 50, 100, 200)
#: states a message leaves by itself: its page asks for its state again meanwhile
MOVING = frozenset({State.QUEUED, State.SENDING, State.DEFERRED})


@dataclass(frozen=True, slots=True)
class Filters:
    state: State | None
    account: str | None
    tenant: str | None
    text: str | None
    limit: int

    def query(self, cursor: str | None = None) -> dict[str, str]:
        """The filters as a link's query (empty ones left out)."""
        values = {
            "state": self.state.value if self.state else None,
            "account": self.account,
            "tenant": self.tenant,
            "q": self.text,
            "limit": str(self.limit) if self.limit != 50 else None,
            "cursor": cursor,
        }
        return {k: v for k, v in values.items() if v}


def _filters(
    state: Annotated[str, Query(max_length=16)] = "",
    account: Annotated[str, Query(max_length=64)] = "",
    tenant: Annotated[str, Query(max_length=64)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Filters:
    """The form sends every field, empty ones as ``""``: any state, account, tenant."""
    chosen = State(state) if state in State.__members__.values() else None
    return Filters(
        chosen, account.strip() or None, tenant.strip() or None, q.strip() or None, limit
    )


FiltersDep = Annotated[Filters, Depends(_filters)]


@router.get("/queue")
async def queue_list(
    request: Request,
    session: UiSessionDep,
    filters: FiltersDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    records, next_cursor = await request.state.services.messages.list(
        filters.tenant,
        state=filters.state,
        account=filters.account,
        text=filters.text,
        limit=filters.limit,
        cursor=cursor or None,
    )
    return render(
        request,
        "queue/list.html",
        session,
        title="Queue",
        current="/queue",
        records=records,
        f=filters,
        states=list(State),
        sizes=PAGE_SIZES,
        first_page=not cursor,
        next_query=filters.query(next_cursor) if next_cursor else None,
        first_query=filters.query(),
    )


@router.get("/queue/{message_id}")
async def queue_message(request: Request, session: UiSessionDep, message_id: str) -> Response:
    services = request.state.services
    try:
        record: MessageRecord = await services.messages.get(message_id, None)
        text, html, raw = await services.messages.content(message_id)
    except NotFound:
        return _not_found(request, session, message_id)
    if raw is not None and text is None and html is None:
        parsed = parse_message(raw)  # submitted over SMTP: shown as the client wrote it
        text, html = parsed.text, parsed.html
    return render(
        request,
        "queue/message.html",
        session,
        title=record.subject or "(no subject)",
        current="/queue",
        m=record,
        text=text,
        has_html=html is not None,
        recipients=recipient_results(record.attempts),
        classes=sorted({a.failure_class.value for a in record.attempts if a.failure_class}),
        status=_status(request, record, None),
    )


@router.get("/queue/{message_id}/status")
async def queue_status(request: Request, message_id: str) -> HTMLResponse:
    """The state and the buttons, asked for again while the message is on its way."""
    record = await request.state.services.messages.get(message_id, None)
    return HTMLResponse(_status(request, record, None))


@router.post("/queue/{message_id}/retry")
async def queue_retry(request: Request, message_id: str) -> HTMLResponse:
    return await _act(request, message_id, "retry")


@router.post("/queue/{message_id}/cancel")
async def queue_cancel(request: Request, message_id: str) -> HTMLResponse:
    return await _act(request, message_id, "cancel")


async def _act(request: Request, message_id: str, action: str) -> HTMLResponse:
    """Retry or cancel in the message's own tenant; a refusal (a sent message cannot be
    cancelled) is answered 200 with its reason, so htmx shows it where the state is."""
    messages = request.state.services.messages
    record = await messages.get(message_id, None)
    try:
        if action == "retry":
            record = await messages.retry(message_id, record.tenant)
        else:
            record = await messages.cancel(message_id, record.tenant)
    except Conflict as exc:
        return HTMLResponse(_status(request, record, f"{action} refused: {exc}", ok=False))
    done = "queued again" if action == "retry" else "cancelled"
    return HTMLResponse(_status(request, record, done))


@router.get("/queue/{message_id}/html")
async def queue_message_html(request: Request, message_id: str) -> Response:
    """The HTML part on its own, for the sandboxed frame. The UI's own headers are left
    off (``ui_page``): they forbid framing, and this answer has a stricter policy."""
    request.state.ui_page = False
    try:
        _, html, raw = await request.state.services.messages.content(message_id)
    except NotFound:
        return Response("no such message", 404, headers=HTML_HEADERS, media_type="text/plain")
    if html is None and raw is not None:
        html = parse_message(raw).html
    return HTMLResponse(html or "", headers=HTML_HEADERS)


def recipient_results(attempts: tuple[Attempt, ...]) -> dict[str, RecipientResult]:
    """Each recipient's latest result over the attempts, in the order first seen."""
    latest: dict[str, RecipientResult] = {}
    for attempt in attempts:
        latest.update(attempt.recipients)
    return latest


def _status(request: Request, record: MessageRecord, result: str | None, *, ok: bool = True) -> str:
    return ui_context(request).fragment(
        "queue/status.html", m=record, result=result, ok=ok, moving=record.state in MOVING
    )


def _not_found(request: Request, session: UiSession, message_id: str) -> HTMLResponse:
    return render(
        request,
        "queue/missing.html",
        session,
        status_code=404,
        title="No such message",
        current="/queue",
        message_id=message_id,
    )
