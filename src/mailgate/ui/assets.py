"""The UI's static files: read once from the package, served under a content hash.

A page names ``/ui/static/htmx.min.js?v=<hash>``; the file is answered with a year's
``immutable`` cache, and a new release (new bytes, new hash) is a new URL, so a
browser never mixes an old script with a new page. No authentication: the files are
the published libraries and the style sheet, nothing of the gateway's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, HTTPException, Request, Response

__all__ = ["Asset", "Assets", "router"]

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: RFC 9111 §5.2.2.1 max-age (one year) and RFC 8246 immutable: the URL changes instead
_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    digest: str  #: the first 12 hex digits of the SHA-256 of ``body``


class Assets:
    """Every ``.js``, ``.css`` and ``.svg`` file of ``mailgate/ui/static``, loaded at start."""

    def __init__(self) -> None:
        self.files: dict[str, Asset] = {}
        for entry in resources.files("mailgate.ui").joinpath("static").iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if suffix in _TYPES:
                body = entry.read_bytes()
                digest = hashlib.sha256(body).hexdigest()[:12]
                self.files[entry.name] = Asset(body, _TYPES[suffix], digest)

    def url(self, name: str) -> str:
        """The versioned URL of a file (a template's ``asset('htmx.min.js')``)."""
        return f"/ui/static/{name}?v={self.files[name].digest}"


router = APIRouter(include_in_schema=False)


@router.get("/ui/static/{name}")
async def static_file(name: str, request: Request) -> Response:
    asset = request.app.state.ui.assets.files.get(name)
    if asset is None:
        raise HTTPException(404, "no such file")
    headers = {"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"}
    return Response(asset.body, media_type=asset.media_type, headers=headers)
