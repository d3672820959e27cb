"""HTTP authentication shared by the API (web/deps.py) and the admin UI (ui/guard.py)."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import HTTPConnection

__all__ = ["basic_credentials"]


def basic_credentials(request: HTTPConnection) -> tuple[str, str] | None:
    """The user and password of ``Authorization: Basic`` (RFC 7617), None without it;
    unreadable ones are ``("", "")``: given, so a failure rather than an absence."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password
