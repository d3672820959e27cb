"""The UI's per-app state (options, session signer, login throttle, files, templates)
and the one way a page is rendered from the base layout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from mailgate import __version__
from mailgate.clock import SystemClock
from mailgate.ingest.auth_throttle import SharedAuthThrottle
from mailgate.ui.assets import Assets
from mailgate.ui.options import UiOptions
from mailgate.ui.sessions import Session, SessionSigner, session_key

if TYPE_CHECKING:  # mailgate.web imports this package
    from mailgate.web.services import Services

__all__ = ["CLIP", "NAV", "UiContext", "UiSession", "clip", "render", "ui_context"]

#: the layout's navigation: (path, label); a page marks itself with ``current=path``
NAV = (
    ("/", "Dashboard"),
    ("/queue", "Queue"),
    ("/inbox", "Inbox"),
    ("/accounts", "Accounts"),
    ("/webhooks", "Webhooks"),
    ("/settings", "Settings"),
)

#: characters of a sender's text a list cell shows (the cell clips it to a line anyway)
CLIP = 300


def clip(text: str, limit: int = CLIP) -> str:
    """The start of ``text``, for a list row: a sender decides its length (a 1 MB
    subject, 10,000 addresses), and each row of a page of 50 would carry all of it."""
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True, slots=True)
class UiSession:
    """The signed-in browser of this request (``csrf``: the token its forms carry)."""

    id: str
    csrf: str


class UiContext:
    def __init__(self, options: UiOptions, api_token: str | None) -> None:
        self.options = options
        admin_pass = options.admin_pass.get_secret_value() if options.admin_pass else None
        secret = options.secret_key.get_secret_value() if options.secret_key else None
        self.signer = SessionSigner(session_key(secret, options.admin_user, admin_pass, api_token))
        #: failed logins per client address (keys ``ui:<address>``), in the store when
        #: the composition root gave one, as SMTP AUTH's are: one limit for every process
        self.throttle = SharedAuthThrottle(
            options.failures, SystemClock(), options.login_failures, options.login_window
        )
        #: the sessions logged out in this process, when there is no store for them
        self._ended: dict[str, float] = {}
        self.assets = Assets()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("mailgate.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(asset=self.assets.url, nav=NAV, version=__version__)
        self.templates.filters["clip"] = clip

    async def ended(self, session: Session) -> bool:
        """Whether a logout ended ``session`` (raises StoreError when that is unknown)."""
        if self.options.ended is None:
            return session.id in self._ended
        return await self.options.ended.ended(session.id)

    async def end(self, session: Session, now: float) -> None:
        """Refuse ``session`` from now on, at every process on the store (a logout)."""
        expires = session.issued + self.signer.lifetime
        if self.options.ended is None:
            self._ended = {sid: at for sid, at in self._ended.items() if at > now}
            self._ended[session.id] = expires
            return
        when = datetime.fromtimestamp(expires, UTC), datetime.fromtimestamp(now, UTC)
        await self.options.ended.end(session.id, *when)

    def fragment(self, name: str, **context: Any) -> str:
        """A template on its own (an SSE fragment, an htmx answer), no layout."""
        return self.templates.get_template(name).render(**context)


def ui_context(request: Request) -> UiContext:
    context = request.app.state.ui
    assert isinstance(context, UiContext)
    return context


def render(
    request: Request,
    name: str,
    session: UiSession,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page from the base layout: ``name`` extends ``base.html`` and gets the mode,
    the session's CSRF token (the layout puts it where htmx sends it) and ``context``."""
    services: Services = request.state.services
    html = ui_context(request).fragment(
        name, mode=services.mode, csrf=session.csrf, **{"current": request.url.path, **context}
    )
    return HTMLResponse(html, status_code=status_code)
