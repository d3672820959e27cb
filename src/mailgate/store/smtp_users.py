"""SMTP submission users: who may hand mail to the gateway over SMTP, and as whom.

Only the password's hash is stored (made and checked by
:mod:`mailgate.services.smtp_users`); a username is unique across tenants, since AUTH
comes before anything in the session says which tenant it is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from mailgate.errors import Conflict, NotFound, StoreError
from mailgate.store.database import Database
from mailgate.store.schema import smtp_users

__all__ = ["SmtpUser", "SmtpUserStore"]


@dataclass(frozen=True, slots=True)
class SmtpUser:
    id: str
    tenant: str
    username: str
    password_hash: str  #: never shown; scrypt (services/smtp_users.py)
    senders: tuple[str, ...]  #: addresses or ``@domain``s it may send as; () = any
    account: str  #: the account its mail goes through
    created_at: datetime
    updated_at: datetime


def _user(row: RowMapping) -> SmtpUser:
    return SmtpUser(
        id=row["id"],
        tenant=row["tenant"],
        username=row["username"],
        password_hash=row["password_hash"],
        senders=tuple(row["senders"]),
        account=row["account"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class SmtpUserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, user: SmtpUser) -> None:
        """:class:`Conflict` when the username is taken (by any tenant)."""
        values = {
            "id": user.id,
            "tenant": user.tenant,
            "username": user.username,
            "password_hash": user.password_hash,
            "senders": list(user.senders),
            "account": user.account,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        }
        taken = Conflict(f"the SMTP username {user.username!r} is taken")
        try:
            async with self.db.write() as conn:
                query = select(smtp_users.c.id).where(smtp_users.c.username == user.username)
                if (await conn.execute(query)).first() is not None:
                    raise taken
                await conn.execute(insert(smtp_users).values(values))
        except StoreError as exc:  # another process took it between the two statements
            if isinstance(exc.__cause__, IntegrityError):
                raise taken from None
            raise

    async def by_username(self, username: str) -> SmtpUser | None:
        """The user AUTH names, whatever its tenant."""
        query = select(smtp_users).where(smtp_users.c.username == username)
        async with self.db.read() as conn:
            row = (await conn.execute(query)).mappings().one_or_none()
        return None if row is None else _user(row)

    async def get(self, tenant: str, username: str) -> SmtpUser:
        found = await self.by_username(username)
        if found is None or found.tenant != tenant:
            raise NotFound(f"no SMTP user {username!r} for tenant {tenant!r}")
        return found

    async def list(self, tenant: str) -> list[SmtpUser]:
        query = (
            select(smtp_users)
            .where(smtp_users.c.tenant == tenant)
            .order_by(smtp_users.c.username)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_user(row) for row in rows]

    async def replace(self, user: SmtpUser) -> None:
        """Write back a changed user (its id, tenant and username stay)."""
        query = (
            update(smtp_users)
            .where(smtp_users.c.id == user.id, smtp_users.c.tenant == user.tenant)
            .values(
                password_hash=user.password_hash,
                senders=list(user.senders),
                account=user.account,
                updated_at=user.updated_at,
            )
        )
        async with self.db.write() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise NotFound(f"no SMTP user {user.username!r} for tenant {user.tenant!r}")

    async def delete(self, tenant: str, username: str) -> None:
        c = smtp_users.c
        query = delete(smtp_users).where(c.tenant == tenant, c.username == username)
        async with self.db.write() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise NotFound(f"no SMTP user {username!r} for tenant {tenant!r}")
