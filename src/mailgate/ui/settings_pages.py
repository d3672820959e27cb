"""The settings page of the admin UI (issue 11): the runtime settings, one form per
group (:mod:`mailgate.ui.settings_form`), applied at once through
:class:`~mailgate.services.runtime.RuntimeSettings` (stored first, so they outlive a
restart), the boot-only settings read-only with secrets redacted, and the "poll
Firestore now" action.

A form is posted by htmx and answered with its group again (the values in force, what
was applied, or the error next to its field), so the rest of the page stays as it is.
An error is answered 200 for htmx, which swaps no 4xx answer, and 422 for a plain form
post, which gets the whole page.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from mailgate.errors import InvalidInput
from mailgate.services.runtime import LOG_LEVELS, RuntimeSettings
from mailgate.ui.context import UiSession, render, ui_context
from mailgate.ui.guard import UiSessionDep, form_fields, ui_guard
from mailgate.ui.settings_form import (
    GROUPS,
    Group,
    GroupView,
    boot_rows,
    field_of,
    group_view,
    show,
    submitted,
)

if TYPE_CHECKING:  # mailgate.web imports this package
    from mailgate.web.services import Services

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])

#: longest wait for "poll Firestore now" (a poll is a few queries)
POLL_TIMEOUT = 30.0
_BY_ID = {group.id: group for group in GROUPS}


@router.get("/settings")
async def settings_page(request: Request, session: UiSessionDep) -> HTMLResponse:
    return _page(request, session)


@router.post("/settings/poll")
async def poll_now(request: Request) -> HTMLResponse:
    """Poll the Firestore collection now; the answer says what the poll found."""
    services: Services = request.state.services
    source = services.firestore
    ui = ui_context(request)
    if source is None:
        return HTMLResponse(ui.fragment("settings/poll.html", result=None, failed=None))
    try:
        async with asyncio.timeout(POLL_TIMEOUT):
            result = await source.poll()
    except TimeoutError:
        failed = f"the poll did not finish in {POLL_TIMEOUT:.0f} s"
        return HTMLResponse(ui.fragment("settings/poll.html", result=None, failed=failed))
    return HTMLResponse(ui.fragment("settings/poll.html", result=result, failed=None))


@router.post("/settings/{group_id}")
async def apply_group(request: Request, group_id: str, session: UiSessionDep) -> HTMLResponse:
    """Apply a group's form, or with ``reset`` one of its settings back to its default."""
    group = _BY_ID.get(group_id)
    if group is None:
        raise HTTPException(404, "no such group of settings")
    runtime = _runtime(request)
    if runtime is None:
        return _answer(request, session, None, ok=False)
    view = await _apply(runtime, group, await form_fields(request))
    return _answer(request, session, view, ok=not view.failed)


async def _apply(runtime: RuntimeSettings, group: Group, form: dict[str, str]) -> GroupView:
    reset = form.get("reset")
    if reset is not None:
        if reset not in group.settings:
            return group_view(runtime, group, error=f"{reset}: not a setting of this form")
        await runtime.change({reset: None})
        return group_view(runtime, group, result=_reset_text(runtime, reset))
    asked = submitted(runtime, group, form)
    if asked.errors:
        return group_view(runtime, group, typed=asked.values, errors=asked.errors)
    try:
        await runtime.change(asked.changes)
    except InvalidInput as exc:
        field = field_of(str(exc), group)
        errors = {field: str(exc).partition(":")[2].strip()} if field else {}
        return group_view(
            runtime, group, typed=asked.values, errors=errors, error=None if field else str(exc)
        )
    return group_view(runtime, group, result=_applied_text(runtime, asked.changes))


def _applied_text(runtime: RuntimeSettings, changes: dict[str, Any]) -> str:
    if not changes:
        return "Nothing to change: these are the values in force."
    current = runtime.current()
    parts = [
        f"{name} back to its default" if value is None else f"{name} = {_brief(current[name])}"
        for name, value in changes.items()
    ]
    return "Applied at once: " + ", ".join(parts) + "."


def _reset_text(runtime: RuntimeSettings, name: str) -> str:
    return f"{name} is back to its configured default ({_brief(runtime.current()[name])})."


def _brief(value: Any) -> str:
    if isinstance(value, dict):  # smtp.chaos: the stages that refuse
        on = [f"{stage} {t['code']} at {show(t['probability'])} %" for stage, t in value.items()
              if t["probability"]]  # fmt: skip
        return ", ".join(on) or "off"
    return show(value)


def _runtime(request: Request) -> RuntimeSettings | None:
    services: Services = request.state.services
    return services.runtime


def _answer(
    request: Request, session: UiSession, view: GroupView | None, *, ok: bool
) -> HTMLResponse:
    if request.headers.get("hx-request") == "true" and view is not None:
        ui = ui_context(request)
        html = ui.fragment("settings/group.html", g=view, csrf=session.csrf, levels=LOG_LEVELS)
        return HTMLResponse(html)
    return _page(request, session, posted=view, status_code=200 if ok else 422)


def _page(
    request: Request,
    session: UiSession,
    *,
    posted: GroupView | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    services: Services = request.state.services
    runtime = services.runtime
    groups: list[GroupView] = []
    if runtime is not None:
        groups = [group_view(runtime, group) for group in GROUPS]
        if posted is not None:
            groups = [posted if g.group.id == posted.group.id else g for g in groups]
    source = services.firestore
    return render(
        request,
        "settings.html",
        session,
        title="Settings",
        status_code=status_code,
        groups=groups,
        levels=LOG_LEVELS,
        boot=boot_rows(runtime.configured) if runtime is not None else [],
        firestore=source is not None,
        poll_interval=show(source.poll_interval) if source is not None else None,
    )
