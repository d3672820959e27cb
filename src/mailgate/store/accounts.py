"""The account directory: sending identities per tenant, secrets encrypted at rest.

Readers (the router) get :class:`~mailgate.model.Account` values with secrets
decrypted in memory; the rows hold only Fernet ciphertext (``*_enc`` columns, see
:mod:`mailgate.crypto`). Every change to an account bumps ``version`` so a cached
transport is rebuilt; health reports (:meth:`AccountStore.record_health`) do not,
since they change nothing a transport is built from.

The enable-after-test rule lives here, inside the write transaction: outbound can
be switched on only when ``tested_at >= settings_changed_at``, and changing the
connection settings switches it off again.
"""

from __future__ import annotations

import builtins
import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping

from mailgate.clock import Clock
from mailgate.crypto import NoSecretKey, SecretBox
from mailgate.errors import Conflict, NotFound
from mailgate.model import (
    Account,
    AccountImap,
    AccountLimits,
    AccountTransport,
    SmtpAuth,
    SmtpSecurity,
)
from mailgate.store.database import Database

if TYPE_CHECKING:
    from mailgate.store.database import StoreConnection
from mailgate.store.outbox import EventKind, event_row, write_events
from mailgate.store.schema import accounts

__all__ = ["NOT_TESTED", "AccountStore"]

#: Why enabling outbound is refused (HTTP 409).
NOT_TESTED = (
    "account {id!r} has not passed a connection test since its connection settings "
    "changed: run POST /api/v1/accounts/{id}/test (or `mailgate accounts test {id}`) first"
)

_SECRETS = {  # column → where the plain value lives on Account
    "smtp_password_enc": "smtp_password",
    "postmark_token_enc": "postmark_token",
    "dkim_key_enc": "dkim_private_key",
}
_OPTIONS = ("verify_tls", "opportunistic_tls", "auth_plaintext")
_IMAP = ("host", "port", "security", "username", "folder", "poll_interval_sec")


class AccountStore:
    """Accounts on SQLite or PostgreSQL; ``box`` is ``None`` when no secret key is set
    (then storing or reading a secret raises :class:`~mailgate.crypto.NoSecretKey`)."""

    def __init__(self, db: Database, box: SecretBox | None, clock: Clock) -> None:
        self.db = db
        self.box = box
        self.clock = clock

    async def get(self, tenant: str, account_id: str) -> Account | None:
        """The account with secrets decrypted, or ``None`` (also for another tenant's)."""
        async with self.db.read() as conn:
            row = await _row(conn, tenant, account_id)
        return None if row is None else self._account(row)

    async def list(self, tenant: str) -> builtins.list[Account]:
        query = select(accounts).where(accounts.c.tenant == tenant).order_by(accounts.c.id)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [self._account(row) for row in rows]

    async def for_sender(self, tenant: str, address: str) -> Account | None:
        """The first enabled account (by id) that may send as ``address``."""
        for account in await self.list(tenant):
            if account.is_outbound_enabled and account.may_send_as(address):
                return account
        return None

    async def create(self, account: Account) -> Account:
        """Store a new account (outbound off until tested); :class:`Conflict` if the id
        is taken in its tenant."""
        now = self.clock.now()
        values = self._values(account) | {
            "tenant": account.tenant,
            "id": account.id,
            "is_outbound_enabled": False,
            "connection_last_ok_at": None,
            "connection_error": None,
            "tested_at": None,
            "settings_changed_at": now,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            if await _row(conn, account.tenant, account.id) is not None:
                raise Conflict(f"account {account.id!r} already exists")
            await conn.execute(insert(accounts).values(**values))
        return await self._must_get(account.tenant, account.id)

    async def update(self, account: Account, *, settings_changed: bool) -> Account:
        """Replace an account's fields (not its health); ``settings_changed`` (host, port,
        security, auth, username, a secret, transport) restarts the enable-after-test
        rule and switches outbound off."""
        now = self.clock.now()
        values = self._values(account) | {"updated_at": now}
        if settings_changed:
            values |= {"settings_changed_at": now, "is_outbound_enabled": False}
        async with self.db.write() as conn:
            await self._bump(conn, account.tenant, account.id, values)
        return await self._must_get(account.tenant, account.id)

    async def set_enabled(self, tenant: str, account_id: str, enabled: bool) -> Account:
        """Switch outbound on or off; on is :class:`Conflict` until a test passed since
        the connection settings last changed."""
        async with self.db.write() as conn:
            row = await _row(conn, tenant, account_id)
            if row is None:
                raise NotFound(f"no account {account_id!r}")
            if enabled and not _tested_since_change(row):
                raise Conflict(NOT_TESTED.format(id=account_id))
            values = {"is_outbound_enabled": enabled, "updated_at": self.clock.now()}
            await self._bump(conn, tenant, account_id, values)
        return await self._must_get(tenant, account_id)

    async def delete(self, tenant: str, account_id: str) -> None:
        query = delete(accounts).where(accounts.c.tenant == tenant, accounts.c.id == account_id)
        async with self.db.write() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise NotFound(f"no account {account_id!r}")

    async def record_health(
        self, tenant: str, account_id: str, *, ok_at: datetime | None, error: str | None
    ) -> None:
        """The account worked at ``ok_at`` (clears the error) or failed with ``error``
        (keeps the last good time); a deleted account is ignored. No version bump."""
        await self._health(tenant, account_id, ok_at=ok_at, error=error)

    async def record_test(
        self, tenant: str, account_id: str, *, passed: bool, error: str | None, at: datetime
    ) -> None:
        """A connection test's outcome: health, and ``tested_at`` when it passed."""
        ok_at = at if passed else None
        await self._health(tenant, account_id, ok_at=ok_at, error=error, tested_at=ok_at)

    async def _health(
        self,
        tenant: str,
        account_id: str,
        *,
        ok_at: datetime | None,
        error: str | None,
        tested_at: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"connection_error": error}
        if ok_at is not None:
            values["connection_last_ok_at"] = ok_at
        if tested_at is not None:
            values["tested_at"] = tested_at
        this = (accounts.c.tenant == tenant, accounts.c.id == account_id)
        async with self.db.write() as conn:
            before = (
                await conn.execute(select(accounts.c.connection_error).where(*this))
            ).one_or_none()
            if before is None:
                return  # deleted meanwhile
            await conn.execute(update(accounts).where(*this).values(**values))
            event = _health_event(account_id, before[0], error, ok_at or self.clock.now())
            if event is not None:
                row = event_row(event[0], event[1], event[2], tenant=tenant, source=None)
                await conn.run_sync(write_events, [row])

    async def rotate(self, box: SecretBox) -> int:
        """Re-encrypt every stored secret under ``box``'s first key, in one transaction;
        returns how many secrets were rewritten."""
        count = 0
        columns = [accounts.c[name] for name in (*_SECRETS, "imap_password_enc")]
        async with self.db.write() as conn:
            query = select(accounts.c.tenant, accounts.c.id, *columns)
            for row in (await conn.execute(query)).mappings().all():
                values = {c.name: box.rotate(row[c.name]) for c in columns if row[c.name]}
                if values:
                    count += len(values)
                    await conn.execute(
                        update(accounts)
                        .where(accounts.c.tenant == row["tenant"], accounts.c.id == row["id"])
                        .values(**values)
                    )
        return count

    async def _must_get(self, tenant: str, account_id: str) -> Account:
        account = await self.get(tenant, account_id)
        if account is None:
            raise NotFound(f"no account {account_id!r}")
        return account

    async def _bump(
        self, conn: StoreConnection, tenant: str, account_id: str, values: dict[str, Any]
    ) -> None:
        query = (
            update(accounts)
            .where(accounts.c.tenant == tenant, accounts.c.id == account_id)
            .values(**values, version=accounts.c.version + 1)
        )
        if (await conn.execute(query)).rowcount == 0:
            raise NotFound(f"no account {account_id!r}")

    def _values(self, a: Account) -> dict[str, Any]:
        """The columns an account's settings fill (not identity, state or health)."""
        imap = {name: getattr(a.imap, name) for name in _IMAP}
        dkim = {"domain": a.dkim_domain, "selector": a.dkim_selector} if a.dkim_domain else None
        values: dict[str, Any] = {
            "from_addrs": list(a.from_),
            "transport": a.transport.value,
            "smtp_host": a.smtp_host,
            "smtp_port": a.smtp_port,
            "smtp_security": a.smtp_security.value,
            "smtp_auth": a.smtp_auth.value,
            "smtp_username": a.smtp_username,
            "smtp_options": {name: getattr(a, name) for name in _OPTIONS},
            "limits": dataclasses.asdict(a.limits),
            "imap": imap,
            "dkim": dkim,
            "imap_password_enc": self._seal(a.imap.password),
        }
        for column, attribute in _SECRETS.items():
            values[column] = self._seal(getattr(a, attribute))
        return values

    def _seal(self, plain: str | None) -> bytes | None:
        if plain is None:
            return None
        if self.box is None:
            raise NoSecretKey()
        return self.box.encrypt(plain)

    def _open(self, token: bytes | None) -> str | None:
        if token is None:
            return None
        if self.box is None:
            raise NoSecretKey("read the stored passwords and tokens")
        return self.box.decrypt(token)

    def _account(self, row: RowMapping) -> Account:
        dkim = row["dkim"] or {}
        options = row["smtp_options"] or {}
        known_limits = {f.name for f in dataclasses.fields(AccountLimits)}
        return Account(
            id=row["id"],
            tenant=row["tenant"],
            transport=AccountTransport(row["transport"]),
            from_=tuple(row["from_addrs"]),
            smtp_host=row["smtp_host"],
            smtp_port=row["smtp_port"],
            smtp_security=SmtpSecurity(row["smtp_security"]),
            smtp_auth=SmtpAuth(row["smtp_auth"]),
            smtp_username=row["smtp_username"],
            is_outbound_enabled=row["is_outbound_enabled"],
            limits=AccountLimits(**{k: v for k, v in row["limits"].items() if k in known_limits}),
            dkim_domain=dkim.get("domain"),
            dkim_selector=dkim.get("selector"),
            version=row["version"],
            imap=self._imap(row),
            connection_last_ok_at=row["connection_last_ok_at"],
            connection_error=row["connection_error"],
            tested_at=row["tested_at"],
            settings_changed_at=row["settings_changed_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            smtp_password=self._open(row["smtp_password_enc"]),
            postmark_token=self._open(row["postmark_token_enc"]),
            dkim_private_key=self._open(row["dkim_key_enc"]),
            verify_tls=bool(options.get("verify_tls", True)),
            opportunistic_tls=bool(options.get("opportunistic_tls", False)),
            auth_plaintext=bool(options.get("auth_plaintext", False)),
        )

    def _imap(self, row: RowMapping) -> AccountImap:
        stored = {k: v for k, v in (row["imap"] or {}).items() if k in _IMAP}
        if "security" in stored:
            stored["security"] = SmtpSecurity(stored["security"])
        return AccountImap(**stored, password=self._open(row["imap_password_enc"]))


async def _row(conn: StoreConnection, tenant: str, account_id: str) -> RowMapping | None:
    query = select(accounts).where(accounts.c.tenant == tenant, accounts.c.id == account_id)
    return (await conn.execute(query)).mappings().first()


def _tested_since_change(row: RowMapping) -> bool:
    tested: datetime | None = row["tested_at"]
    return tested is not None and tested >= row["settings_changed_at"]


def _health_event(
    account_id: str, was: str | None, error: str | None, at: datetime
) -> tuple[EventKind, dict[str, Any], datetime] | None:
    """``account.failing`` when a working account starts failing, ``account.recovered``
    when a failing one works again; nothing while it stays as it was (one event per
    change, not one per message)."""
    if error is not None and was is None:
        return EventKind.ACCOUNT_FAILING, {"account": account_id, "error": error}, at
    if error is None and was is not None:
        payload = {"account": account_id, "error_was": was}
        return EventKind.ACCOUNT_RECOVERED, payload, at
    return None
