"""``/docs``: Swagger UI served from the installed ``swagger_ui_bundle`` package.

FastAPI's default page loads Swagger UI from a CDN, so offline (or behind a
proxy that blocks it) ``/docs`` was blank. The assets come from the package
instead, under ``/docs/static``, and the page references nothing off-origin.
The bundle must be Swagger UI 5 or newer (``swagger-ui-bundle-v2``): version 4
refuses to render the OpenAPI 3.1 document FastAPI publishes.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]  # ships no py.typed
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["mount_docs"]

STATIC = "/docs/static"


def mount_docs(app: FastAPI) -> None:
    """Add ``/docs`` and its assets."""
    assets = Path(swagger_ui_bundle.swagger_ui_path)
    app.mount(STATIC, StaticFiles(directory=assets), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        )
