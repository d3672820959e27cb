"""The accounts pages of the admin UI (issue 11): ``/accounts`` (the list with health,
and a new account) and ``/accounts/{id}`` (edit, test, enable, send a test email).

Everything goes through :class:`~mailgate.services.AccountsService` and
:class:`~mailgate.services.MessagesService`, as the API does, for the operator's tenant
``default``. The rules are the service's and the store's, so a forged request meets
them too: outbound is switched on only when a test passed since the connection
settings last changed (``tested_at >= settings_changed_at``, kept in the store, so it
holds across restarts and processes); a secret is write-only.

Forms are plain HTML forms (they work without script); htmx enhances the actions on the
account page: the answer is the whole page, of which htmx takes the part that changed
(``hx-select``). htmx swaps only 2xx answers, so a refusal it asked for is a 200 that
says why; the same refusal of a plain form post is a 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from mailgate.deliver.probe import ProbeReport
from mailgate.errors import Conflict, NotFound
from mailgate.model import Account, State
from mailgate.services import AccountIn, AccountPatch, AccountsService
from mailgate.store import Activity, MessageRecord
from mailgate.ui import account_form as af
from mailgate.ui.context import render, ui_context
from mailgate.ui.guard import UiSessionDep, form_fields, ui_guard

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])

TENANT = "default"
#: a test email's states after which its outcome no longer changes
FINAL = frozenset({State.SENT, State.FAILED, State.CANCELLED})


@dataclass(frozen=True, slots=True)
class Health:
    """What the list and the page say of an account's health."""

    state: str  #: ok, failing, untested (never, or not since its settings changed)
    ok_at: str | None  #: the last test or send that worked
    failed_at: str | None  #: the last failed or deferred message (of the last 24 hours)
    failed_message: str | None
    error: str | None  #: the last test's or send's error, else the day's last failure's


def health(account: Account, activity: Activity) -> Health:
    last = activity.last_errors.get(account.id)
    if account.connection_error:
        state = "failing"
    elif not account.tested_since_change and account.source != "config":
        state = "untested"
    else:
        state = "ok" if account.connection_last_ok_at else "untested"
    return Health(
        state=state,
        ok_at=_when(account.connection_last_ok_at),
        failed_at=_when(last.at) if last else None,
        failed_message=last.message_id if last else None,
        error=account.connection_error or (last.error if last else None),
    )


# --- the list and a new account ----------------------------------------------------------


@router.get("/accounts")
async def accounts_page(request: Request, session: UiSessionDep) -> HTMLResponse:
    return await _list(request, session, af.form_values(None), {})


@router.post("/accounts")
async def create_account(request: Request, session: UiSessionDep) -> Response:
    """A new account (outbound off until tested); refused fields are shown at the form."""
    form = await form_fields(request)
    fields = af.form_fields_of(form) | {"id": form.get("id", "")}
    try:
        account = await _service(request).create(TENANT, AccountIn.model_validate(fields))
    except ValidationError as exc:
        return await _list(request, session, af.redisplay(form, {}), af.problems(exc), 422)
    except Conflict as exc:
        problem = {"id": str(exc)} if "exists" in str(exc) else {"form": str(exc)}
        return await _list(request, session, af.redisplay(form, {}), problem, 409)
    return RedirectResponse(f"/accounts/{account.id}", status_code=303)


async def _list(
    request: Request,
    session: UiSessionDep,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    accounts = await _service(request).list(TENANT)
    activity = await request.state.services.messages.activity(TENANT)
    rows = [(a, health(a, activity)) for a in accounts]
    return render(
        request,
        "accounts/list.html",
        session,
        status_code=status_code,
        title="Accounts",
        rows=rows,
        form=_form_context(values, errors, new=True),
    )


# --- one account -----------------------------------------------------------------------


@router.get("/accounts/{account_id}")
async def account_page(request: Request, session: UiSessionDep, account_id: str) -> HTMLResponse:
    return await _page(request, session, account_id)


@router.post("/accounts/{account_id}")
async def update_account(request: Request, session: UiSessionDep, account_id: str) -> Response:
    """Save the form: an empty secret keeps the stored one; a changed connection setting
    switches outbound off until the next passing test (the service's rule)."""
    form = await form_fields(request)
    service = _service(request)
    try:
        patch = AccountPatch.model_validate(af.form_fields_of(form))
        await service.update(TENANT, account_id, patch)
    except ValidationError as exc:
        return await _rejected(request, session, account_id, form, af.problems(exc), 422)
    except NotFound:
        raise
    except Conflict as exc:
        return await _rejected(request, session, account_id, form, {"form": str(exc)}, 409)
    return RedirectResponse(f"/accounts/{account_id}?saved=1", status_code=303)


@router.post("/accounts/{account_id}/test")
async def test_account(request: Request, session: UiSessionDep, account_id: str) -> HTMLResponse:
    """Probe the server (connect, TLS, EHLO, AUTH, NOOP, QUIT); the outcome is recorded
    on the account, so a pass unlocks the enable switch."""
    _, report = await _service(request).test(TENANT, account_id)
    return await _page(request, session, account_id, report=report)


@router.post("/accounts/{account_id}/enable")
async def enable_account(request: Request, session: UiSessionDep, account_id: str) -> Response:
    """``enabled=1`` switches outbound on (refused with the reason until a test passed
    since the settings changed), anything else off."""
    form = await form_fields(request)
    enabled = form.get("enabled") == "1"
    try:
        await _service(request).set_enabled(TENANT, account_id, enabled)
    except NotFound:
        raise
    except Conflict as exc:
        status = 200 if request.headers.get("hx-request") else 409
        return await _page(request, session, account_id, refused=str(exc), status_code=status)
    return await _page(request, session, account_id)


@router.post("/accounts/{account_id}/send-test")
async def send_test(request: Request, session: UiSessionDep, account_id: str) -> HTMLResponse:
    """Queue a test email through this account (``account`` named, as a REST client
    names it); the page then follows the message to its outcome."""
    form = await form_fields(request)
    account = await _account(request, account_id)
    item = {
        "account": account.id,
        "from": form.get("from") or _sender(account),
        "to": form.get("to", ""),
        "subject": f"mailgate test email through {account.id}",
        "text": f"This is a test email sent through the account {account.id} from mailgate's"
        " admin page.\n",
        "metadata": {"mailgate_ui": "test email"},
    }
    report = await request.state.services.messages.submit([item], TENANT)
    sent = await _message(request, report.ids[0]) if report.ids else None
    refused = "; ".join(r.reason for r in report.rejected) or None
    return await _page(
        request, session, account_id, sent=sent, send_refused=refused, send_values=form
    )


@router.get("/accounts/{account_id}/sent/{message_id}")
async def sent_status(request: Request, account_id: str, message_id: str) -> HTMLResponse:
    """A test email's state (the page polls it until the outcome is final)."""
    sent = await _message(request, message_id)
    html = ui_context(request).fragment(
        "accounts/sent.html", account_id=account_id, sent=sent, final=FINAL
    )
    return HTMLResponse(html)


async def _page(
    request: Request,
    session: UiSessionDep,
    account_id: str,
    *,
    status_code: int = 200,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    report: ProbeReport | None = None,
    refused: str | None = None,
    sent: MessageRecord | None = None,
    send_refused: str | None = None,
    send_values: dict[str, str] | None = None,
) -> HTMLResponse:
    account = await _account(request, account_id)
    activity = await request.state.services.messages.activity(TENANT)
    return render(
        request,
        "accounts/detail.html",
        session,
        status_code=status_code,
        title=f"Account {account.id}",
        current="/accounts",
        account=account,
        health=health(account, activity),
        form=_form_context(values or af.form_values(account), errors or {}, new=False),
        saved=request.query_params.get("saved") == "1",
        report=report,
        refused=refused,
        sent=sent,
        final=FINAL,
        send_refused=send_refused,
        send_to=(send_values or {}).get("to", ""),
        send_from=(send_values or {}).get("from") or _sender(account),
    )


async def _rejected(
    request: Request,
    session: UiSessionDep,
    account_id: str,
    form: dict[str, str],
    errors: dict[str, str],
    status_code: int,
) -> HTMLResponse:
    account = await _account(request, account_id)
    secrets_set = {
        "smtp_password": account.smtp_password is not None,
        "postmark_token": account.postmark_token is not None,
    }
    values = af.redisplay(form, secrets_set) | {"id": account.id}
    return await _page(
        request, session, account_id, values=values, errors=errors, status_code=status_code
    )


def _form_context(values: dict[str, Any], errors: dict[str, str], *, new: bool) -> dict[str, Any]:
    return {
        "v": values,
        "errors": errors,
        "new": new,
        "transports": af.TRANSPORTS,
        "securities": af.SECURITIES,
        "auths": af.AUTHS,
    }


def _service(request: Request) -> AccountsService:
    service: AccountsService | None = request.state.services.accounts
    if service is None:
        raise HTTPException(404, "accounts are not available here")
    return service


async def _account(request: Request, account_id: str) -> Account:
    try:
        return await _service(request).get(TENANT, account_id)
    except NotFound:
        raise HTTPException(404, f"no account {account_id!r}") from None


async def _message(request: Request, message_id: str) -> MessageRecord:
    try:
        record: MessageRecord = await request.state.services.messages.get(message_id, TENANT)
    except NotFound:
        raise HTTPException(404, f"no message {message_id!r}") from None
    return record


def _sender(account: Account) -> str:
    """The account's first address, or ``mailgate-test@`` its first domain."""
    for allowed in account.from_:
        if "@" in allowed and not allowed.startswith("@"):
            return allowed
    if account.from_:
        return f"mailgate-test@{account.from_[0].lstrip('@')}"
    return ""


def _when(value: Any) -> str | None:
    return None if value is None else str(value.isoformat(timespec="seconds"))
