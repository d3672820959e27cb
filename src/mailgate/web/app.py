"""FastAPI application factory; resources arrive through lifespan state.

Requests pass, outermost first: the Host check (DNS rebinding), the ``Allow``
answers for 405/OPTIONS, the request-body limit, then the routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from mailgate import __version__
from mailgate.errors import Conflict, NotFound, StoreUnavailable
from mailgate.ingest.submission import MessageIn
from mailgate.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mailgate.settings import HttpSettings, LimitSettings
from mailgate.ui.mount import mount_ui
from mailgate.ui.options import UiOptions
from mailgate.web import (
    api_accounts,
    api_chaos,
    api_inbox,
    api_messages,
    api_smtp_users,
    api_sources,
    api_stats,
    api_webhooks,
)
from mailgate.web.api_mailpit import create_mailpit_app
from mailgate.web.api_stats import PoolStatsSource
from mailgate.web.deps import TenantDep, admin_only
from mailgate.web.docs import mount_docs
from mailgate.web.hosts import HostCheck
from mailgate.web.limits import BodyLimit, effective_body_limit
from mailgate.web.mailpit_options import MailpitOptions
from mailgate.web.methods import AllowedMethods
from mailgate.web.probes import MetricsSource, Readiness, ready_report
from mailgate.web.responses import errors
from mailgate.web.services import Services

__all__ = ["MetricsSource", "Readiness", "Services", "create_app"]


class ReadyOut(BaseModel):
    status: str = Field(description="ready, or not ready")
    checks: dict[str, str] = Field(description="each part: ok, or what is wrong")


def create_app(
    services: Services,
    *,
    http: HttpSettings | None = None,
    limits: LimitSettings | None = None,
    pool_stats: PoolStatsSource | None = None,
    metrics: MetricsSource | None = None,
    readiness: Readiness | None = None,
    mailpit: MailpitOptions | None = None,
    ui: UiOptions | None = None,
) -> FastAPI:
    """The web app; ``http`` and ``limits`` default to the settings' defaults.
    ``pool_stats``: the SMTP pools' counters for ``GET /api/v1/stats``; ``metrics``: the
    Prometheus exposition for ``/metrics``; ``readiness``: each part's state for
    ``/readyz``; ``mailpit``: release, chaos and info of the Mailpit API (``/mailpit``);
    ``ui``: the admin UI's credentials and live sources (``/``, mailgate.ui)."""
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
    app.include_router(api_webhooks.router, prefix="/api/v1")
    app.include_router(api_smtp_users.router, prefix="/api/v1")
    app.include_router(api_sources.router, prefix="/api/v1")
    app.include_router(api_chaos.router, prefix="/api/v1")
    mailpit = mailpit or MailpitOptions()
    app.state.mailpit = mailpit  # the UI's inbox pages release and check links with it
    app.mount("/mailpit", create_mailpit_app(mailpit))  # its own app: not in /openapi.json
    mount_docs(app)
    token = services.api_token.get_secret_value() if services.api_token else None
    mount_ui(app, ui or UiOptions(), api_token=token)

    @app.get("/healthz", tags=["health"], responses=errors(auth=False))
    async def healthz() -> dict[str, str]:
        """Alive: the process answers. Whether it can take mail is ``/readyz``."""
        return {"status": "ok", "mode": services.mode}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=ReadyOut,
        responses=errors(auth=False) | {503: {"model": ReadyOut, "description": "not ready"}},
    )
    async def readyz() -> JSONResponse:
        """Ready to take mail: the store reachable and migrated, the dispatcher running,
        the SMTP server listening (the parts this mode runs). 503 names what is not."""
        status, body = ready_report(await readiness() if readiness is not None else {})
        return JSONResponse(body, status_code=status)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        responses=errors() | {403: {"description": "a tenant's token: use the admin token"}},
    )
    async def prometheus(tenant: TenantDep) -> Response:
        """Prometheus metrics (text exposition format 0.0.4), with the API token when one
        is set; the operator's, so a tenant's token is refused."""
        admin_only(tenant, "metrics cover every tenant")
        body = await metrics() if metrics is not None else b""
        return Response(body, media_type=METRICS_CONTENT_TYPE)

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
