"""SmtpUsersService: the one way the web API, the CLI and the SMTP server manage and
check SMTP submission users.

A password is kept only as a scrypt hash (RFC 7914; ``hashlib.scrypt``, N=2^14, r=8,
p=1: about 16 MiB and tens of milliseconds to check, so a stolen database is slow to
attack). Checking runs in a worker thread, never on the event loop; a password checked
once is remembered, against the stored hash it matched, for a minute, so a client that
opens a connection per message does not pay scrypt each time (a changed password changes
the stored hash, which ends that at once).

``senders`` lists what a user may put in MAIL FROM and From: whole addresses
(``app@example.com``) or domains (``@example.com`` or ``example.com``); empty means any.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mailgate.clock import Clock
from mailgate.ids import new_id
from mailgate.store.smtp_users import SmtpUser, SmtpUserStore

__all__ = [
    "SmtpUserIn",
    "SmtpUserPatch",
    "SmtpUsersService",
    "hash_password",
    "may_send_as",
    "smtp_user_view",
    "verify_password",
]

_N, _R, _P = 2**14, 8, 1
_MAX_SENDER = 320
_SCHEME = "scrypt"
_CACHE_SECONDS = 60.0
_CACHE_MAX = 1024

#: a username as AUTH PLAIN/LOGIN carry it: printable, no spaces (they would be ambiguous
#: in logs and in a client's configuration)
_USERNAME = r"^[!-~]{1,255}$"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})+"
#: a sender: ``user@example.com``, ``@example.com`` or ``example.com`` (also the schema's)
SENDER_PATTERN = rf"^(?:[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@|@)?{_DOMAIN}$"
_SENDER = re.compile(SENDER_PATTERN)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), for :func:`verify_password`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"{_SCHEME}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


def _sender(value: str) -> str:
    if _SENDER.match(value) and len(value) <= _MAX_SENDER:
        return value.lower()
    raise ValueError(f"{value!r} is neither an address nor a domain (@example.com)")


def _senders(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return list(dict.fromkeys(_sender(v) for v in values))


def _password(value: SecretStr | None) -> SecretStr | None:
    if value is not None and "\0" in value.get_secret_value():
        raise ValueError("a password cannot hold NUL: AUTH PLAIN could not carry it")
    return value


Sender = Annotated[str, Field(pattern=SENDER_PATTERN, max_length=_MAX_SENDER)]


class SmtpUserIn(BaseModel):
    """A new SMTP user."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=_USERNAME, description="what the client gives to AUTH")
    password: SecretStr = Field(
        min_length=8, max_length=1024, description="write-only: kept only as a scrypt hash"
    )
    senders: list[Sender] = Field(
        default_factory=list,
        max_length=1000,
        description="addresses or domains (@example.com) it may send as, in MAIL FROM and"
        " From:; empty: any",
    )
    account: str = Field(
        "default", min_length=1, max_length=64, description="the account its mail goes through"
    )

    _check_senders = field_validator("senders")(_senders)
    _check_password = field_validator("password")(_password)


class SmtpUserPatch(BaseModel):
    """Changes to an SMTP user; what is left out stays."""

    model_config = ConfigDict(extra="forbid")

    password: SecretStr | None = Field(None, min_length=8, max_length=1024)
    senders: list[Sender] | None = Field(None, max_length=1000)
    account: str | None = Field(None, min_length=1, max_length=64)

    _check_senders = field_validator("senders")(_senders)
    _check_password = field_validator("password")(_password)


def smtp_user_view(user: SmtpUser) -> dict[str, Any]:
    """A user as answers show it: never its password or hash."""
    return {
        "username": user.username,
        "senders": list(user.senders),
        "account": user.account,
        "created_at": _iso(user.created_at),
        "updated_at": _iso(user.updated_at),
    }


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def may_send_as(user: SmtpUser, address: str) -> bool:
    """Whether ``address`` (bare) is one of the user's senders, or in one of its domains."""
    if not user.senders:
        return True
    address = address.strip().lower()
    domain = address.rpartition("@")[2]
    for allowed in user.senders:
        if "@" in allowed.lstrip("@"):
            if address == allowed:
                return True
        elif domain == allowed.lstrip("@"):
            return True
    return False


class SmtpUsersService:
    def __init__(self, store: SmtpUserStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._key = secrets.token_bytes(32)  #: keys the cache: no password is kept
        self._checked: dict[tuple[str, bytes], float] = {}

    async def create(self, tenant: str, spec: SmtpUserIn) -> SmtpUser:
        now = self.clock.now()
        password = spec.password.get_secret_value()
        user = SmtpUser(
            id=new_id(),
            tenant=tenant,
            username=spec.username,
            password_hash=await asyncio.to_thread(hash_password, password),
            senders=tuple(spec.senders),
            account=spec.account,
            created_at=now,
            updated_at=now,
        )
        await self.store.add(user)
        return user

    async def list(self, tenant: str) -> builtins.list[SmtpUser]:
        return await self.store.list(tenant)

    async def get(self, tenant: str, username: str) -> SmtpUser:
        return await self.store.get(tenant, username)

    async def update(self, tenant: str, username: str, patch: SmtpUserPatch) -> SmtpUser:
        user = await self.store.get(tenant, username)
        changes: dict[str, Any] = {"updated_at": self.clock.now()}
        if patch.password is not None:
            secret = patch.password.get_secret_value()
            changes["password_hash"] = await asyncio.to_thread(hash_password, secret)
        if patch.senders is not None:
            changes["senders"] = tuple(patch.senders)
        if patch.account is not None:
            changes["account"] = patch.account
        user = replace(user, **changes)
        await self.store.replace(user)
        return user

    async def delete(self, tenant: str, username: str) -> None:
        await self.store.delete(tenant, username)

    async def current(self, user: SmtpUser) -> SmtpUser | None:
        """``user`` as it is now (its senders and account may have changed), or None when
        it was removed, or made again, or its password changed since it logged in: a
        session that logged in as it may no longer send."""
        now = await self.store.by_username(user.username)
        if now is None or now.id != user.id or now.password_hash != user.password_hash:
            return None
        return now

    async def authenticate(self, username: str, password: str) -> SmtpUser | None:
        """The user these credentials are, or None. As slow for an unknown username as
        for a wrong password (a hash is checked either way)."""
        user = await self.store.by_username(username)
        stored = user.password_hash if user is not None else _decoy()
        key = (stored, hmac.digest(self._key, password.encode("utf-8"), "sha256"))
        now = time.monotonic()
        if user is not None and self._checked.get(key, 0.0) > now:
            return user
        if not await asyncio.to_thread(verify_password, password, stored) or user is None:
            return None
        if len(self._checked) >= _CACHE_MAX:
            self._checked = {k: t for k, t in self._checked.items() if t > now}
            if len(self._checked) >= _CACHE_MAX:
                self._checked.clear()
        self._checked[key] = now + _CACHE_SECONDS
        return user


@functools.cache
def _decoy() -> str:
    """What an unknown username's password is checked against (it matches nothing)."""
    return hash_password(secrets.token_urlsafe(16))
