"""Security headers and the session cookie on every answer of a UI route.

A pure ASGI middleware, so the headers are on every answer the guard saw, the 401,
403 and 429 it raised and the event streams included, whatever shape the route
returns. It acts only where :func:`mailgate.ui.guard.ui_guard` marked the request
(``ui_page`` in the request state): the JSON API and the Mailpit API keep their own.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailgate.ui.sessions import SESSION_LIFETIME, Session

__all__ = ["CSP", "UiHeaders"]

#: CSP Level 3: scripts and styles only from the UI's own files (no inline script, no
#: inline style, no eval); the pages may not be framed (also X-Frame-Options for
#: older browsers); forms post only here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show live data and hold the CSRF token
}


class UiHeaders:
    def __init__(self, app: ASGIApp, *, cookie: str) -> None:
        self.app = app
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            state = scope.get("state") or {}
            if message["type"] == "http.response.start" and state.get("ui_page"):
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    if name == "Content-Security-Policy" and name in headers:
                        # the route's own (an attachment's ``sandbox``) stays beside
                        # the UI's: a browser enforces both (CSP3 §8.1)
                        headers.append(name, value)
                    else:
                        headers[name] = value
                session: Session | None = state.get("ui_new_session")
                if session is not None:
                    headers.append("Set-Cookie", self._cookie(session, scope["scheme"]))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cookie(self, session: Session, scheme: str) -> str:
        """RFC 6265bis: HttpOnly (no script reads it), SameSite=Strict (never sent on a
        cross-site request), Secure when the request came over TLS."""
        secure = "; Secure" if scheme == "https" else ""
        return (
            f"{self.cookie}={session.cookie}; Path=/; Max-Age={SESSION_LIFETIME};"
            f" HttpOnly; SameSite=Strict{secure}"
        )
