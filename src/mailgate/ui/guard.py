"""Who may use the UI, and which requests may change state.

Every UI route depends on :func:`ui_guard` (the UI router carries it, so a new page is
covered without asking). In order:

1. A valid session cookie (:mod:`mailgate.ui.sessions`) lets the request in.
2. Without one, when no credentials are configured (neither ``admin_user``/
   ``admin_pass`` nor ``api_token``; allowed only on loopback, see
   :meth:`mailgate.settings.Settings.check_safe`) a new session is made: dev mode.
3. Otherwise the request must carry them: Basic Auth (RFC 7617) with the admin user
   and password, or any user name and the API token as the password; or the API
   token as ``Authorization: Bearer`` or ``X-API-Token``. Success makes a session
   (the cookie is set on the answer); no credentials are 401 with a Basic challenge
   and the login page; wrong ones count against the client address, and past
   ``login_failures`` within ``login_window`` the address gets 429 until they age out.
4. A request that is not GET/HEAD/OPTIONS must come from the UI's own pages: not
   cross-site by ``Sec-Fetch-Site`` (Fetch Metadata), an ``Origin`` if sent naming this
   host, and the session's CSRF token in ``X-CSRF-Token`` (htmx sends it from the
   layout's ``hx-headers``) or the form field ``csrf_token``; else 403.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, HTTPException, Request

from mailgate.errors import StoreError
from mailgate.http_auth import basic_credentials
from mailgate.ui.context import UiContext, UiSession, ui_context
from mailgate.ui.sessions import Session

if TYPE_CHECKING:  # mailgate.web imports this package
    from mailgate.web.services import Services

__all__ = [
    "COOKIE",
    "LoginRequired",
    "UiSessionDep",
    "check_login",
    "form_fields",
    "same_origin",
    "ui_guard",
]

COOKIE = "mailgate_ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """No usable credentials: answered with 401, a Basic challenge and the login form."""

    def __init__(self, failed: bool = False) -> None:
        super().__init__("login required")
        self.failed = failed  #: credentials were given, and wrong


async def ui_guard(request: Request) -> UiSession:
    ui = ui_context(request)
    request.state.ui_page = True  # the security headers and the cookie (ui/headers.py)
    session = ui.signer.read(request.cookies.get(COOKIE), time.time())
    if session is not None and await _ended(ui, session):
        session = None  # logged out: a copy of its cookie opens nothing
    if session is None:
        session = await _log_in(request, ui)
        request.state.ui_new_session = session
    request.state.ui_session = session  # for the logout
    if request.method not in SAFE_METHODS:
        await _check_csrf(request, ui, session)
    return UiSession(session.id, ui.signer.csrf_token(session))


UiSessionDep = Annotated[UiSession, Depends(ui_guard)]


async def _ended(ui: UiContext, session: Session) -> bool:
    try:
        return await ui.ended(session)
    except StoreError:
        raise HTTPException(503, "sessions cannot be checked: try again later") from None


async def _log_in(request: Request, ui: UiContext) -> Session:
    services: Services = request.state.services
    if not auth_required(ui, services):
        return ui.signer.new(time.time())
    user, password, token = _credentials(request)
    if user is None and password is None and token is None:
        raise LoginRequired()
    if not await check_login(request, ui, user, password, token):
        raise LoginRequired(failed=True)
    return ui.signer.new(time.time())


def auth_required(ui: UiContext, services: Services) -> bool:
    return ui.options.admin_user is not None or services.api_token is not None


async def check_login(
    request: Request, ui: UiContext, user: str | None, password: str | None, token: str | None
) -> bool:
    """Whether the credentials open the UI. A failure counts against the client address
    in the store, as SMTP AUTH's do (:class:`SharedAuthThrottle`: one limit for every
    process on it), and an address past the limit is refused (429) before they are even
    compared; one whose failures cannot be read, 503. A login reads the count once and
    writes only when it fails (a valid session cookie skips all this)."""
    client = "ui:" + (request.client.host if request.client else "")
    try:
        admitted = await ui.throttle.admit(client)
    except StoreError:
        raise HTTPException(503, "failed logins cannot be counted: try again later") from None
    if not admitted:
        retry = str(int(ui.options.login_window))
        raise HTTPException(429, "too many failed logins: wait", headers={"Retry-After": retry})
    accepted = False
    try:
        accepted = _accepted(ui, request.state.services, user, password, token)
    finally:
        await ui.throttle.done(client, failed=not accepted)
    return accepted


def _accepted(
    ui: UiContext, services: Services, user: str | None, password: str | None, token: str | None
) -> bool:
    o = ui.options
    if o.admin_user is not None and o.admin_pass is not None and user is not None:
        good_user = _same(user, o.admin_user)
        if _same(password or "", o.admin_pass.get_secret_value()) and good_user:
            return True
    api_token = services.api_token.get_secret_value() if services.api_token else None
    given = token if token is not None else password
    return api_token is not None and given is not None and _same(given, api_token)


def _credentials(request: Request) -> tuple[str | None, str | None, str | None]:
    """(user, password) of Basic Auth, or the token of Bearer / X-API-Token."""
    if (basic := basic_credentials(request)) is not None:
        return (*basic, None)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return None, None, value.strip()
    return None, None, request.headers.get("x-api-token") or None


async def _check_csrf(request: Request, ui: UiContext, session: Session) -> None:
    if not same_origin(request):
        raise HTTPException(403, "cross-site request refused")
    given = request.headers.get("x-csrf-token")
    if given is None:
        given = (await form_fields(request)).get("csrf_token")
    if not ui.signer.csrf_ok(session, given):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")


def same_origin(request: Request) -> bool:
    """Fetch Metadata says same-origin (or a user's own navigation), and ``Origin``,
    when sent, names this host. Browsers too old to send either rely on the token."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host")


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body's fields (the first of each name;
    empty for any other body). The UI's forms are all of this kind; the body is read
    once and kept by the request, so the route can read it again."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())
