"""What a client may write to an account, validated once for the web API and the CLI.

Secrets arrive as :class:`~pydantic.SecretStr` so no repr, log line or validation
error can show them (pydantic masks them); they leave only as ``*_set`` booleans
(:func:`account_view`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StringConstraints,
)

from mailgate.model import Account, AccountLimits, AccountTransport, SmtpAuth, SmtpSecurity

__all__ = ["AccountIn", "AccountPatch", "DkimIn", "LimitsIn", "account_view", "is_hostname"]

#: RFC 1123 §2.1 host names (labels of letters, digits, inner hyphens; dotted IPv4
#: addresses are names of this form too) or an IPv6 address. A pattern, not code, so
#: the published schema says exactly what is accepted.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
_IPV6 = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
_LOCAL = r"[^\s@<>()\[\],;:\"\\]{1,64}"
HOST_PATTERN = f"^(?:{_NAME}|{_IPV6})$"
SENDER_PATTERN = f"^(?:{_LOCAL}@|@)?{_NAME}$"
_DEFAULT_PORTS = {SmtpSecurity.SSL: 465, SmtpSecurity.STARTTLS: 587, SmtpSecurity.NONE: 25}


def is_hostname(value: str) -> bool:
    """Whether ``value`` is a host name or an IP address as :data:`HOST_PATTERN` says."""
    return len(value) <= 253 and re.fullmatch(HOST_PATTERN, value) is not None


Host = Annotated[str, StringConstraints(pattern=HOST_PATTERN, max_length=253)] | None


def _number(value: Any) -> Any:
    """JSON Schema's ``integer``: 25 and 25.0 are, "25" and true are not."""
    if isinstance(value, str | bool):
        raise ValueError("must be an integer")
    return value


Port = Annotated[int | None, Field(ge=1, le=65535), BeforeValidator(_number)]
AccountId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), Field(examples=["agent1"])
]
#: ``user@example.com``, ``@example.com`` or ``example.com``; kept lower-cased
Sender = Annotated[
    str,
    StringConstraints(pattern=SENDER_PATTERN, max_length=320),
    AfterValidator(str.lower),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=998)]


class DkimIn(BaseModel):
    """DKIM signing (RFC 6376): the d= domain, the s= selector and the PEM private key."""

    model_config = ConfigDict(extra="forbid")

    domain: Annotated[str, StringConstraints(pattern=f"^{_NAME}$", max_length=253)]
    selector: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,63}$")]
    private_key: SecretStr = Field(description="PEM; write-only.")


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_minute: Annotated[int | None, Field(ge=1), BeforeValidator(_number)] = Field(
        None, description="Most messages per minute."
    )
    per_hour: Annotated[int | None, Field(ge=1), BeforeValidator(_number)] = Field(
        None, description="Most messages per hour."
    )
    per_day: Annotated[int | None, Field(ge=1), BeforeValidator(_number)] = Field(
        None, description="Most messages per day."
    )
    pool_size: Annotated[int, Field(ge=1, le=100), BeforeValidator(_number)] = Field(
        3, description="Most open connections."
    )
    limit_behavior: Literal["wait", "reject"] = Field(
        "wait", description="Over the limit: hold the message, or refuse it (429) at submission."
    )


class _Fields(BaseModel):
    """Every writable field but ``id``; ``None`` everywhere so a PATCH can omit any."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: list[Sender] | None = Field(
        None, alias="from", description="Addresses or domains (@example.com) it may send as."
    )
    transport: AccountTransport | None = None
    smtp_host: Host = None
    smtp_port: Port = Field(None, description="Default: 465 for ssl, 587 starttls, 25 none.")
    smtp_security: SmtpSecurity | None = None
    smtp_auth: SmtpAuth | None = None
    smtp_username: Text | None = None
    smtp_password: SecretStr | None = Field(None, description="Write-only.")
    postmark_token: SecretStr | None = Field(None, description="Write-only.")
    is_outbound_enabled: StrictBool | None = Field(
        None, description="Refused (409) until a test passed since the settings changed."
    )
    verify_tls: StrictBool | None = Field(None, description="Check the server's certificate.")
    opportunistic_tls: StrictBool | None = Field(None, description="STARTTLS when offered on none.")
    auth_plaintext: StrictBool | None = Field(None, description="Allow AUTH without TLS.")
    limits: LimitsIn | None = None
    imap_host: Host = None
    imap_port: Port = None
    imap_security: SmtpSecurity | None = None
    imap_username: Text | None = None
    imap_password: SecretStr | None = Field(None, description="Write-only.")
    imap_folder: Text | None = None
    poll_interval_sec: Annotated[int | None, Field(ge=10, le=86400), BeforeValidator(_number)] = (
        None
    )
    dkim: DkimIn | None = Field(None, description="Sign outgoing mail; null: do not.")


class AccountPatch(_Fields):
    """A PATCH: only the fields given change; ``null`` clears one."""


class AccountIn(_Fields):
    """A whole account (also the result of applying a PATCH to one).

    Fields that only matter together (an SMTP account's host and username, a
    Postmark token) are not required here: an incomplete account is stored, fails
    its test at the missing step, and so can never be enabled. That keeps the
    published schema exact: every body it allows is accepted.
    """

    id: AccountId

    def secret(self, name: str) -> str | None:
        value: SecretStr | None = getattr(self, name)
        return None if value is None else value.get_secret_value()


def account_view(account: Account) -> dict[str, Any]:
    """The API's one shape of an account: no secret, only whether each is set."""
    a = account
    return {
        "id": a.id,
        "tenant": a.tenant,
        "source": a.source,
        "from": list(a.from_),
        "transport": a.transport.value,
        "smtp_host": a.smtp_host,
        "smtp_port": a.smtp_port or _DEFAULT_PORTS[a.smtp_security],
        "smtp_security": a.smtp_security.value,
        "smtp_auth": a.smtp_auth.value,
        "smtp_username": a.smtp_username,
        "smtp_password_set": a.smtp_password is not None,
        "postmark_token_set": a.postmark_token is not None,
        "is_outbound_enabled": a.is_outbound_enabled,
        "verify_tls": a.verify_tls,
        "opportunistic_tls": a.opportunistic_tls,
        "auth_plaintext": a.auth_plaintext,
        "limits": limits_view(a.limits),
        "imap_host": a.imap.host,
        "imap_port": a.imap.port,
        "imap_security": a.imap.security.value,
        "imap_username": a.imap.username,
        "imap_password_set": a.imap.password is not None,
        "imap_folder": a.imap.folder,
        "poll_interval_sec": a.imap.poll_interval_sec,
        "dkim": _dkim(a),
        "tested_since_change": a.tested_since_change,
        "connection_last_ok_at": _when(a.connection_last_ok_at),
        "connection_error": a.connection_error,
        "tested_at": _when(a.tested_at),
        "created_at": _when(a.created_at),
        "updated_at": _when(a.updated_at),
    }


def limits_view(limits: AccountLimits) -> dict[str, Any]:
    """An account's pacing limits and pool size, as the API shows and takes them."""
    return {
        "per_minute": limits.per_minute,
        "per_hour": limits.per_hour,
        "per_day": limits.per_day,
        "pool_size": limits.pool_size,
        "limit_behavior": limits.limit_behavior,
    }


def _dkim(a: Account) -> dict[str, Any] | None:
    if a.dkim_domain is None:
        return None
    return {
        "domain": a.dkim_domain,
        "selector": a.dkim_selector,
        "private_key_set": a.dkim_private_key is not None,
    }


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
