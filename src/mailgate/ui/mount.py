"""The admin UI mounted on the web app: its routes, its login answer and its headers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from mailgate.ui import (
    accounts_pages,
    assets,
    inbox_pages,
    pages,
    queue_pages,
    settings_pages,
    webhooks_pages,
)
from mailgate.ui.context import UiContext, ui_context
from mailgate.ui.guard import COOKIE, LoginRequired
from mailgate.ui.headers import UiHeaders
from mailgate.ui.options import UiOptions

__all__ = ["mount_ui"]


def mount_ui(app: FastAPI, options: UiOptions, *, api_token: str | None) -> None:
    """Add the UI's routes, its login answer and its headers to ``app``."""
    app.state.ui = UiContext(options, api_token)
    app.include_router(assets.router)
    app.include_router(pages.login_router)
    # each page's own module first: its route shadows the placeholder in pages.router
    for page in (queue_pages, inbox_pages, accounts_pages, settings_pages, webhooks_pages):
        app.include_router(page.router)
    app.include_router(pages.router)
    app.add_exception_handler(LoginRequired, _login_page)
    app.add_middleware(UiHeaders, cookie=COOKIE)


async def _login_page(request: Request, exc: Exception) -> Response:
    """401 and the login form. With an admin user, a Basic challenge (RFC 7617 §2): the
    browser asks for the user and password, and shows the form when cancelled. With
    only the API token a Bearer one (RFC 6750 §3), which no browser prompts for, so
    the form is what the user sees."""
    assert isinstance(exc, LoginRequired)
    ui = ui_context(request)
    page = ui.fragment("login.html", failed=exc.failed, next=request.url.path)
    scheme = "Basic" if ui.options.admin_user is not None else "Bearer"
    challenge = {"WWW-Authenticate": f'{scheme} realm="mailgate admin", charset="UTF-8"'}
    return HTMLResponse(page, status_code=401, headers=challenge)
