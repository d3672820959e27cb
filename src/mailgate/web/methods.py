"""``405``/``OPTIONS`` answers that list every method of a path.

Starlette tries routes one by one, so a 405 for ``PUT /messages/{id}`` carried
only the methods of the first route of that path (``Allow: GET``, not DELETE).
RFC 9110 §15.5.6 requires a 405 to list the target's methods in ``Allow``, and
§9.3.7 lets ``OPTIONS`` describe them: :class:`AllowedMethods` answers both from
the union of every route that matches the path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowedMethods"]

PathMethods = Mapping[str, Iterable[str]]


class AllowedMethods:
    """Pure ASGI middleware.

    ``paths`` gives each path template (``/api/v1/messages/{message_id}``) its
    methods; it is called once, at the first request, when every route exists.
    """

    def __init__(self, app: ASGIApp, *, paths: Callable[[], PathMethods]) -> None:
        self.app = app
        self._paths = paths
        #: each template's regex, its methods, and whether it is literal (no {parameter})
        self._table: list[tuple[re.Pattern[str], frozenset[str], bool]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        allow = self.allow(scope) if scope["type"] == "http" else None
        if allow is None:
            await self.app(scope, receive, send)
        elif scope["method"] == "OPTIONS":
            await _answer(send, 204, allow, b"")
        else:
            detail = f"method {scope['method']} is not allowed here; allowed: {allow}"
            await _answer(send, 405, allow, json.dumps({"detail": detail}).encode())

    def allow(self, scope: Scope) -> str | None:
        """The ``Allow`` value when the path exists but not for this method, else None."""
        if self._table is None:
            self._table = [
                (compile_path(path)[0], frozenset(m.upper() for m in methods), "{" not in path)
                for path, methods in self._paths().items()
            ]
        matching = [(m, literal) for p, m, literal in self._table if p.match(scope["path"])]
        # a literal path (/inbox/wait) owns its path: PUT there is a 405, never a PUT of
        # the message "wait" by the template beside it (/inbox/{capture_id})
        literal_only = any(literal for _, literal in matching)
        methods: set[str] = set()
        for route_methods, literal in matching:
            if literal or not literal_only:
                methods |= route_methods
        if not methods or scope["method"] in methods:
            return None
        return ", ".join(sorted(methods | {"OPTIONS"}))


async def _answer(send: Send, status: int, allow: str, body: bytes) -> None:
    headers = [(b"allow", allow.encode()), (b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
