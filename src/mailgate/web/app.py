"""FastAPI application factory; resources arrive through lifespan state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mailgate import __version__
from mailgate.errors import Conflict, NotFound
from mailgate.ingest.submission import MessageIn
from mailgate.web import api_inbox, api_messages
from mailgate.web.services import Services

__all__ = ["Services", "create_app"]


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"services": services}

    app = FastAPI(
        title="mailgate", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    app.include_router(api_messages.router, prefix="/api/v1")
    app.include_router(api_inbox.router, prefix="/api/v1")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "mode": services.mode}

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus MessageIn, which POST /messages validates by hand
    (so one bad item in a batch cannot sink the others)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        message_in = MessageIn.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(message_in.pop("$defs", {}))
        components["MessageIn"] = message_in
        app.openapi_schema = schema
    return app.openapi_schema
