"""Per-tenant API tokens, stored as SHA-256 digests only.

A token is shown once, when it is made (``mailgate tokens add --tenant T``); the
database keeps ``sha256(token)``, so a copy of the database lets nobody call the
API. Tokens are 256 random bits, so a plain unsalted digest is enough (there is no
dictionary to try) and lets one indexed lookup find the tenant.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from mailgate.clock import Clock
from mailgate.errors import NotFound
from mailgate.ids import new_id
from mailgate.store.database import Database
from mailgate.store.schema import api_tokens

__all__ = ["ApiToken", "TokenStore", "token_digest"]

_USED_RESOLUTION = timedelta(minutes=1)
_PREFIX = "mg_"  #: makes a leaked token easy to recognise (secret scanners, logs)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A token's record; the token itself is never kept."""

    id: str
    tenant: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = None  #: to the minute: written at most once a minute


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(self, tenant: str, name: str = "") -> tuple[ApiToken, str]:
        """A new token for ``tenant``: its record, and the token (returned this once)."""
        token = _PREFIX + secrets.token_urlsafe(32)
        record = ApiToken(new_id(), tenant, name, self.clock.now())
        async with self.db.write() as conn:
            await conn.execute(
                insert(api_tokens).values(
                    id=record.id,
                    tenant=tenant,
                    name=name,
                    token_hash=token_digest(token),
                    created_at=record.created_at,
                )
            )
        return record, token

    async def tenant_of(self, token: str) -> str | None:
        """The tenant ``token`` belongs to, or ``None`` if it is unknown (or removed).

        Notes when it was used, at most once a minute per token: a write per request
        would cost every API call a transaction.
        """
        c = api_tokens.c
        query = select(c.id, c.tenant, c.last_used_at).where(c.token_hash == token_digest(token))
        async with self.db.read() as conn:
            found = (await conn.execute(query)).one_or_none()
        if found is None:
            return None
        now = self.clock.now()
        if found.last_used_at is None or now - found.last_used_at >= _USED_RESOLUTION:
            used = update(api_tokens).where(c.id == found.id).values(last_used_at=now)
            async with self.db.write() as conn:
                await conn.execute(used)
        tenant: str = found.tenant
        return tenant

    async def list(self, tenant: str) -> list[ApiToken]:
        query = (
            select(
                api_tokens.c.id,
                api_tokens.c.tenant,
                api_tokens.c.name,
                api_tokens.c.created_at,
                api_tokens.c.last_used_at,
            )
            .where(api_tokens.c.tenant == tenant)
            .order_by(api_tokens.c.created_at, api_tokens.c.id)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [ApiToken(*row) for row in rows]

    async def delete(self, tenant: str, token_id: str) -> None:
        query = delete(api_tokens).where(api_tokens.c.tenant == tenant, api_tokens.c.id == token_id)
        async with self.db.write() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise NotFound(f"no token {token_id!r} for tenant {tenant!r}")
