"""The settings pages of the admin UI (issue 11)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from mailgate.ui.guard import ui_guard

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(ui_guard)])
