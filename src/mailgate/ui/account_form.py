"""The account form of the admin UI: what it shows of an account, what a submitted form
means as the API's fields, and each validation problem next to its field.

Secrets are write-only here as in the API: :func:`form_values` never holds one, only
whether it is set (the field shows "unchanged"); a secret submitted empty is left out
of the fields, so the stored one is kept. Problems come from pydantic without the
input (``include_input=False``): a rejected password is never echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mailgate.model import Account, AccountTransport, SmtpAuth, SmtpSecurity

__all__ = [
    "AUTHS",
    "CHECKS",
    "LIMITS",
    "SECRETS",
    "SECURITIES",
    "TRANSPORTS",
    "form_fields_of",
    "form_values",
    "problems",
    "redisplay",
]

TRANSPORTS = tuple(t.value for t in AccountTransport)
SECURITIES = tuple(s.value for s in SmtpSecurity)
AUTHS = tuple(a.value for a in SmtpAuth)
#: write-only fields: never rendered, kept when submitted empty
SECRETS = ("smtp_password", "postmark_token")
#: check boxes (an unchecked box is absent from the form: false)
CHECKS = ("verify_tls", "opportunistic_tls", "auth_plaintext")
LIMITS = ("per_minute", "per_hour", "per_day", "pool_size")
_TEXT = ("smtp_host", "smtp_username")
_CHOICES = {"transport": TRANSPORTS, "smtp_security": SECURITIES, "smtp_auth": AUTHS}


def form_values(account: Account | None) -> dict[str, Any]:
    """The form's fields for ``account`` (a new account's defaults for ``None``), with
    ``*_set`` flags in place of the secrets."""
    a = account or Account(id="", tenant="", transport=AccountTransport.SMTP)
    return {
        "id": a.id,
        "from": ", ".join(a.from_),
        "transport": a.transport.value,
        "smtp_host": a.smtp_host or "",
        "smtp_port": "" if a.smtp_port is None else str(a.smtp_port),
        "smtp_security": a.smtp_security.value,
        "smtp_auth": a.smtp_auth.value,
        "smtp_username": a.smtp_username or "",
        "smtp_password_set": a.smtp_password is not None,
        "postmark_token_set": a.postmark_token is not None,
        "verify_tls": a.verify_tls,
        "opportunistic_tls": a.opportunistic_tls,
        "auth_plaintext": a.auth_plaintext,
        **{name: _text(getattr(a.limits, name)) for name in LIMITS},
        "limit_behavior": a.limits.limit_behavior,
    }


def redisplay(form: Mapping[str, str], secrets_set: Mapping[str, bool]) -> dict[str, Any]:
    """A rejected form shown again as typed, its secrets dropped (typed again or kept)."""
    values: dict[str, Any] = {k: v for k, v in form.items() if k not in SECRETS}
    values.update({name: name in form for name in CHECKS})
    values.update({f"{name}_set": secrets_set.get(name, False) for name in SECRETS})
    for name, choices in _CHOICES.items():
        values.setdefault(name, choices[0])
    values.setdefault("limit_behavior", "wait")
    return values


def form_fields_of(form: Mapping[str, str]) -> dict[str, Any]:
    """A submitted form as the API's account fields: an empty text clears its field, an
    empty secret is left out (the stored one stays); numbers that do not parse are passed
    on as typed, for the schema to refuse with its own reason."""
    fields: dict[str, Any] = {
        "from": [s for s in re.split(r"[\s,]+", form.get("from", "")) if s],
        "smtp_port": _number(form.get("smtp_port", "")),
        **{name: form.get(name) or None for name in _TEXT},
        **{name: form.get(name) or None for name in _CHOICES},
        **{name: name in form for name in CHECKS},
    }
    for name in SECRETS:
        if form.get(name):
            fields[name] = form[name]
    limits: dict[str, Any] = {name: _number(form.get(name, "")) for name in LIMITS}
    limits = {k: v for k, v in limits.items() if v is not None}
    limits["limit_behavior"] = form.get("limit_behavior") or "wait"
    fields["limits"] = limits
    return fields


def problems(exc: ValidationError) -> dict[str, str]:
    """Field name → why it was refused (the first reason of each field)."""
    found: dict[str, str] = {}
    for problem in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in problem["loc"]]
        name = loc[1] if loc[:1] == ["limits"] and len(loc) > 1 else (loc[0] if loc else "")
        found.setdefault(name, problem["msg"].removeprefix("Value error, "))
    return found


def _number(text: str) -> int | str | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
