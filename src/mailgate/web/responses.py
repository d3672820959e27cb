"""The error answers every route can give, for the published OpenAPI schema.

The schema must describe what the server really does (schemathesis checks it):
every error the API answers is a JSON object with a ``detail`` reason, and each
route lists the status codes it can produce.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["ErrorOut", "errors"]


class ErrorOut(BaseModel):
    """Why a request was refused."""

    detail: str


_WHY = {
    400: "the request body is not valid JSON",
    401: "missing or invalid API token",
    404: "no such resource",
    409: "the message's state does not allow this",
    413: "the request body is over the limit (RFC 9110 §15.5.14)",
    415: "the request body is not JSON (Content-Type must be application/json)",
    421: "the Host header names no host served here (DNS-rebinding guard, no API token set)",
    503: "the database is unavailable; nothing was changed, retry after Retry-After seconds",
}

#: Every route can answer these (the middleware in front of all of them).
COMMON = (413, 421)


def errors(*codes: int, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``codes``, :data:`COMMON` and (``auth``) 401."""
    wanted = {*codes, *COMMON, *((401, 503) if auth else ())}
    return {code: {"model": ErrorOut, "description": _WHY[code]} for code in sorted(wanted)}
