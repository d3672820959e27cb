"""The UI's routes here: the dashboard and its stream, and the login form (each other
page group has its module: ``queue_pages``, ``inbox_pages``, …).

Everything on :data:`router` passes :func:`~mailgate.ui.guard.ui_guard` (sessions,
credentials, CSRF); only the login form's POST is outside it and checks its own.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from mailgate.errors import StoreError
from mailgate.ui.context import render, ui_context
from mailgate.ui.dashboard import dashboard_view, render_fragments
from mailgate.ui.guard import (
    COOKIE,
    UiSessionDep,
    check_login,
    form_fields,
    same_origin,
    ui_guard,
)
from mailgate.ui.live import fragment_stream

__all__ = ["login_router", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])
login_router = APIRouter(include_in_schema=False)


@router.get("/")
async def dashboard(request: Request, session: UiSessionDep) -> HTMLResponse:
    ui = ui_context(request)
    fragments = render_fragments(ui, await dashboard_view(request, ui))
    return render(request, "dashboard.html", session, title="Dashboard", fragments=fragments)


@router.get("/ui/events/dashboard")
async def dashboard_events(request: Request) -> StreamingResponse:
    """The dashboard's fragments as Server-Sent Events, each when it changed."""
    ui = ui_context(request)

    async def fragments() -> dict[str, str]:
        return render_fragments(ui, await dashboard_view(request, ui))

    stream = fragment_stream(fragments, ui.options.pulse, ui.options.refresh)
    return StreamingResponse(stream, media_type="text/event-stream")


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    """Ends the session at every process on the store, not only the browser's cookie."""
    try:
        await ui_context(request).end(request.state.ui_session, time.time())
    except StoreError:
        raise HTTPException(503, "the session cannot be ended: try again later") from None
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@login_router.post("/ui/login")
async def login(request: Request) -> Response:
    """The login form: the admin user and password, or the API token. Cross-site posts
    are refused (login CSRF); failures count toward the client's rate limit."""
    ui = ui_context(request)
    request.state.ui_page = True
    if not same_origin(request):
        raise HTTPException(403, "cross-site request refused")
    form = await form_fields(request)
    user, password, token = (form.get(k) or None for k in ("user", "password", "token"))
    if not await check_login(request, ui, user, password, token):
        page = ui.fragment("login.html", failed=True, next=form.get("next", "/"))
        return HTMLResponse(page, status_code=401)
    request.state.ui_new_session = ui.signer.new(time.time())
    return RedirectResponse(_local(form.get("next", "/")), status_code=303)


def _local(target: str) -> str:
    """Only a path of this site (an open redirect would lend the login to phishing)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
