"""``/docs``: Swagger UI served from the installed ``swagger_ui_bundle`` package.

FastAPI's default page loads Swagger UI from a CDN, so offline (or behind a
proxy that blocks it) ``/docs`` was blank. The assets come from the package
instead, under ``/docs/static``, and the page references nothing off-origin.

Swagger UI before 5.0 renders only ``openapi: 3.0.n`` documents and refuses the
3.1 that FastAPI publishes ("Unable to render this definition"). With such a
bundle the page reads ``/docs/openapi.json``: the same schema labelled 3.0.3.
``/openapi.json`` itself is never changed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import swagger_ui_bundle  # type: ignore[import-untyped]  # ships no py.typed
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles

__all__ = ["mount_docs"]

STATIC = "/docs/static"


def mount_docs(app: FastAPI) -> None:
    """Add ``/docs``, its assets, and (for Swagger UI 4) the 3.0-labelled schema."""
    assets = Path(swagger_ui_bundle.swagger_ui_path)
    app.mount(STATIC, StaticFiles(directory=assets), name="swagger-ui")
    openapi_url = "/openapi.json"
    if _major_version(assets) < 5:
        openapi_url = "/docs/openapi.json"

        @app.get(openapi_url, include_in_schema=False)
        async def openapi_for_swagger_ui_4() -> JSONResponse:
            schema: dict[str, Any] = {**app.openapi(), "openapi": "3.0.3"}
            return JSONResponse(schema)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        )


def _major_version(assets: Path) -> int:
    """The bundle names its folder ``swagger-ui-X.Y.Z``; unknown counts as current."""
    found = re.search(r"(\d+)\.\d+\.\d+", assets.name)
    return int(found.group(1)) if found else 5
