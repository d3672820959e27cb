"""FastAPI application factory; resources arrive through lifespan state.

Requests pass, outermost first: the Host check (DNS rebinding), the ``Allow``
answers for 405/OPTIONS, the request-body limit, then the routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from mailgate import __version__
from mailgate.errors import Conflict, NotFound, StoreUnavailable
from mailgate.ingest.submission import MessageIn
from mailgate.settings import HttpSettings, LimitSettings
from mailgate.web import api_accounts, api_inbox, api_messages, api_stats
from mailgate.web.api_stats import PoolStatsSource
from mailgate.web.docs import mount_docs
from mailgate.web.hosts import HostCheck
from mailgate.web.limits import BodyLimit, effective_body_limit
from mailgate.web.methods import AllowedMethods
from mailgate.web.responses import errors
from mailgate.web.services import Services

__all__ = ["Services", "create_app"]


def create_app(
    services: Services,
    *,
    http: HttpSettings | None = None,
    limits: LimitSettings | None = None,
    pool_stats: PoolStatsSource | None = None,
) -> FastAPI:
    """The web app; ``http`` and ``limits`` default to the settings' defaults.
    ``pool_stats``: the SMTP pools' counters for ``GET /api/v1/stats``."""
    http = http or HttpSettings()
    limits = limits or LimitSettings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"services": services, "pool_stats": pool_stats}

    app = FastAPI(
        title="mailgate", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.include_router(api_messages.router, prefix="/api/v1")
    app.include_router(api_inbox.router, prefix="/api/v1")
    app.include_router(api_stats.router, prefix="/api/v1")
    app.include_router(api_accounts.router, prefix="/api/v1")
    mount_docs(app)

    @app.get("/healthz", tags=["health"], responses=errors(auth=False))
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "mode": services.mode}

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        # RFC 9110 §15.6.4: a temporary condition; nothing was accepted, try again
        detail = "the database is unavailable; nothing was changed, try again later"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})

    app.add_middleware(BodyLimit, limit=effective_body_limit(limits))
    app.add_middleware(AllowedMethods, paths=lambda: _path_methods(app))
    app.add_middleware(HostCheck, allowed=http.allowed_hosts, enabled=services.api_token is None)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _path_methods(app: FastAPI) -> dict[str, set[str]]:
    """Every path's methods: the published ones, and the routes kept out of the schema."""
    paths: dict[str, set[str]] = {}
    for path, operations in app.openapi().get("paths", {}).items():
        paths.setdefault(path, set()).update(m for m in operations if m != "parameters")
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            paths.setdefault(route.path, set()).update(route.methods or ())
    return paths


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
