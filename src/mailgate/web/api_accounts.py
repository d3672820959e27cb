"""``/api/v1/accounts``: sending identities of the caller's tenant, and their test.

Secrets are write-only: answers say ``smtp_password_set: true``, never the value,
and a 422 never echoes the submitted body (FastAPI's default would: the password
with it), only where and why.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError

from mailgate.deliver.probe import ProbeReport
from mailgate.model import Account
from mailgate.services import AccountIn, AccountPatch, AccountsService, account_view
from mailgate.web.deps import ServicesDep, TenantDep, require_token
from mailgate.web.responses import errors

__all__ = ["NoEchoRoute", "router"]


class NoEchoRoute(APIRoute):
    """Validation errors without the ``input`` (a password can be in it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise RequestValidationError(_without_input(exc.errors())) from None

        return route


def _without_input(problems: Any) -> list[dict[str, Any]]:
    return [{"type": p["type"], "loc": list(p["loc"]), "msg": p["msg"]} for p in problems]


router = APIRouter(
    prefix="/accounts",
    tags=["accounts"],
    dependencies=[Depends(require_token)],
    route_class=NoEchoRoute,
)


class LimitsOut(BaseModel):
    per_minute: int | None
    per_hour: int | None
    per_day: int | None
    pool_size: int
    limit_behavior: str


class DkimOut(BaseModel):
    domain: str
    selector: str
    private_key_set: bool


class AccountOut(BaseModel):
    """An account as every answer shows it: secrets only as ``*_set`` flags."""

    id: str
    tenant: str
    source: str = Field(description='"api": stored; "config": the relay URL (read-only)')
    from_: list[str] = Field(alias="from")
    transport: str
    smtp_host: str | None
    smtp_port: int
    smtp_security: str
    smtp_auth: str
    smtp_username: str | None
    smtp_password_set: bool
    postmark_token_set: bool
    is_outbound_enabled: bool
    verify_tls: bool
    opportunistic_tls: bool
    auth_plaintext: bool
    limits: LimitsOut
    imap_host: str | None
    imap_port: int | None
    imap_security: str
    imap_username: str | None
    imap_password_set: bool
    imap_folder: str
    poll_interval_sec: int
    dkim: DkimOut | None
    tested_since_change: bool = Field(description="outbound may be enabled")
    connection_last_ok_at: str | None
    connection_error: str | None
    tested_at: str | None
    created_at: str | None
    updated_at: str | None


class AccountList(BaseModel):
    accounts: list[AccountOut]


class StepOut(BaseModel):
    name: str = Field(description="connect, tls, ehlo, auth, noop or quit")
    ok: bool
    reply: str | None = Field(description="the server's reply or the error, on failure")


class TestOut(BaseModel):
    ok: bool
    error: str | None
    steps: list[StepOut]
    account: AccountOut


def _accounts(services: ServicesDep) -> AccountsService:
    if services.accounts is None:
        raise HTTPException(404, "accounts are not available here")
    return services.accounts


def _out(account: Account) -> dict[str, Any]:
    return account_view(account)


@router.get("", response_model=AccountList, responses=errors())
async def list_accounts(services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return {"accounts": [_out(a) for a in await _accounts(services).list(tenant)]}


@router.post("", status_code=201, response_model=AccountOut, responses=errors(400, 409, 415))
async def create_account(spec: AccountIn, services: ServicesDep, tenant: TenantDep) -> Any:
    """Outbound starts disabled: test the account, then enable it."""
    return _out(await _accounts(services).create(tenant, spec))


@router.get("/{account_id}", response_model=AccountOut, responses=errors(404))
async def get_account(account_id: str, services: ServicesDep, tenant: TenantDep) -> Any:
    return _out(await _accounts(services).get(tenant, account_id))


@router.patch("/{account_id}", response_model=AccountOut, responses=errors(400, 404, 409, 415))
async def update_account(
    account_id: str, patch: AccountPatch, services: ServicesDep, tenant: TenantDep
) -> Any:
    """Changing a connection setting switches outbound off until the next passing test."""
    try:
        return _out(await _accounts(services).update(tenant, account_id, patch))
    except ValidationError as exc:  # the merged account is incomplete
        problems = exc.errors(include_input=False, include_url=False)
        raise RequestValidationError(_body_loc(problems)) from None


def _body_loc(problems: Any) -> list[dict[str, Any]]:
    return [{"type": p["type"], "loc": ["body", *p["loc"]], "msg": p["msg"]} for p in problems]


@router.delete("/{account_id}", status_code=204, responses=errors(404, 409))
async def delete_account(account_id: str, services: ServicesDep, tenant: TenantDep) -> Response:
    await _accounts(services).delete(tenant, account_id)
    return Response(status_code=204)


@router.post("/{account_id}/enable", response_model=AccountOut, responses=errors(404, 409))
async def enable_account(account_id: str, services: ServicesDep, tenant: TenantDep) -> Any:
    """Refused (409) until a test passed since the connection settings last changed."""
    return _out(await _accounts(services).set_enabled(tenant, account_id, True))


@router.post("/{account_id}/disable", response_model=AccountOut, responses=errors(404, 409))
async def disable_account(account_id: str, services: ServicesDep, tenant: TenantDep) -> Any:
    return _out(await _accounts(services).set_enabled(tenant, account_id, False))


@router.post("/{account_id}/test", response_model=TestOut, responses=errors(404))
async def test_account(account_id: str, services: ServicesDep, tenant: TenantDep) -> Any:
    """Connect, TLS as configured, EHLO, AUTH, NOOP, QUIT (Postmark: its auth check);
    records ``connection_last_ok_at``/``connection_error``. 200 even when it fails:
    ``ok`` and the failed step say what happened."""
    account, report = await _accounts(services).test(tenant, account_id)
    return _test_out(account, report)


def _test_out(account: Account, report: ProbeReport) -> dict[str, Any]:
    steps = [{"name": s.name, "ok": s.ok, "reply": s.reply} for s in report.steps]
    return {"ok": report.ok, "error": report.error, "steps": steps, "account": _out(account)}
