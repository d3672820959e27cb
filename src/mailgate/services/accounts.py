"""AccountsService: the one way the web API and the CLI change accounts.

It owns the rules a store query cannot see: the configured relay is the read-only
account ``default`` (``source: "config"``); a PATCH is applied to the whole account
and validated again as one; changing a connection setting restarts the
enable-after-test rule; a test records the account's health. Handlers and commands
call this, never the store.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mailgate.clock import Clock
from mailgate.crypto import SecretBox
from mailgate.deliver.probe import ProbeReport, probe
from mailgate.errors import Conflict, NotFound
from mailgate.model import (
    Account,
    AccountImap,
    AccountLimits,
    AccountTransport,
    SmtpAuth,
    SmtpSecurity,
)
from mailgate.services.account_schema import AccountIn, AccountPatch, limits_view
from mailgate.store.accounts import NOT_TESTED, AccountStore

__all__ = ["AccountsService", "ProbeSettings"]

#: Fields whose change needs a new connection test before outbound may be enabled.
CONNECTION_FIELDS = (
    "transport",
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_auth",
    "smtp_username",
    "smtp_password",
    "postmark_token",
    "verify_tls",
    "opportunistic_tls",
    "auth_plaintext",
)
_SECRET_FIELDS = ("smtp_password", "postmark_token", "imap_password")


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    timeout: float = 30.0
    local_hostname: str | None = None
    postmark_url: str = "https://api.postmarkapp.com"


class AccountsService:
    """``configured``: accounts from settings (the relay as ``default``), shown to every
    tenant, never changed here. ``on_change(tenant, id)`` runs after a change or delete
    (the router drops its cached transport)."""

    def __init__(
        self,
        store: AccountStore,
        clock: Clock,
        *,
        configured: Sequence[Account] = (),
        probe_settings: ProbeSettings | None = None,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.configured = {a.id: replace(a, source="config") for a in configured}
        self.probe_settings = probe_settings or ProbeSettings()
        self.on_change = on_change

    async def list(self, tenant: str) -> builtins.list[Account]:
        stored = await self.store.list(tenant)
        shadowed = {a.id for a in stored}
        config = [replace(a, tenant=tenant) for a in self.configured.values()]
        return [a for a in config if a.id not in shadowed] + stored

    async def get(self, tenant: str, account_id: str) -> Account:
        account = await self.store.get(tenant, account_id)
        if account is None and account_id in self.configured:
            account = replace(self.configured[account_id], tenant=tenant)
        if account is None:
            raise NotFound(f"no account {account_id!r}")
        return account

    async def create(self, tenant: str, spec: AccountIn) -> Account:
        """A new account; outbound stays off until it has passed a test."""
        self._writable(spec.id)
        if spec.is_outbound_enabled:
            raise Conflict(NOT_TESTED.format(id=spec.id))
        return await self.store.create(_account(tenant, spec))

    async def update(self, tenant: str, account_id: str, patch: AccountPatch) -> Account:
        """Apply ``patch`` to the whole account, validate it again, store it."""
        self._writable(account_id)
        old = await self.get(tenant, account_id)
        fields = _fields(old) | _given(patch)
        merged = AccountIn.model_validate(fields)
        new = _account(tenant, merged)
        changed = any(getattr(old, f) != getattr(new, f) for f in CONNECTION_FIELDS)
        enable = patch.is_outbound_enabled
        if enable and (changed or not old.tested_since_change):
            raise Conflict(NOT_TESTED.format(id=account_id))
        updated = await self.store.update(new, settings_changed=changed)
        if enable is not None and enable != updated.is_outbound_enabled:
            updated = await self.store.set_enabled(tenant, account_id, enable)
        self._changed(tenant, account_id)
        return updated

    async def set_enabled(self, tenant: str, account_id: str, enabled: bool) -> Account:
        self._writable(account_id)
        account = await self.store.set_enabled(tenant, account_id, enabled)
        self._changed(tenant, account_id)
        return account

    async def delete(self, tenant: str, account_id: str) -> None:
        self._writable(account_id)
        await self.store.delete(tenant, account_id)
        self._changed(tenant, account_id)

    async def test(self, tenant: str, account_id: str) -> tuple[Account, ProbeReport]:
        """Probe the account's server; record the outcome on a stored account."""
        account = await self.get(tenant, account_id)
        at = self.clock.now()
        p = self.probe_settings
        report = await probe(
            account,
            reply_timeout=p.timeout,
            local_hostname=p.local_hostname,
            postmark_url=p.postmark_url,
        )
        if account.source == "config":
            return account, report
        await self.store.record_test(
            tenant, account_id, passed=report.ok, error=report.error, at=at
        )
        return await self.get(tenant, account_id), report

    async def rotate(self, box: SecretBox) -> int:
        """Re-encrypt every stored secret under ``box``'s first key."""
        return await self.store.rotate(box)

    def _writable(self, account_id: str) -> None:
        if account_id in self.configured:
            raise Conflict(
                f"account {account_id!r} comes from the configuration "
                "(--relay / MAILGATE_RELAY_URL): change it there"
            )

    def _changed(self, tenant: str, account_id: str) -> None:
        if self.on_change is not None:
            self.on_change(tenant, account_id)


def _given(patch: AccountPatch) -> dict[str, Any]:
    """The fields a PATCH named, secrets unwrapped (``null`` included: it clears)."""
    given = patch.model_dump(exclude_unset=True, by_alias=True, exclude={"limits", "dkim"})
    for name in _SECRET_FIELDS:
        value = getattr(patch, name)
        if name in given and value is not None:
            given[name] = value.get_secret_value()
    if "limits" in patch.model_fields_set:
        given["limits"] = patch.limits.model_dump() if patch.limits else None
    if "dkim" in patch.model_fields_set:
        given["dkim"] = patch.dkim
    return given


def _fields(a: Account) -> dict[str, Any]:
    """An account as the writable API fields (secrets plain: only merged, never shown)."""
    return {
        "id": a.id,
        "from": list(a.from_),
        "transport": a.transport,
        "smtp_host": a.smtp_host,
        "smtp_port": a.smtp_port,
        "smtp_security": a.smtp_security,
        "smtp_auth": a.smtp_auth,
        "smtp_username": a.smtp_username,
        "smtp_password": a.smtp_password,
        "postmark_token": a.postmark_token,
        "verify_tls": a.verify_tls,
        "opportunistic_tls": a.opportunistic_tls,
        "auth_plaintext": a.auth_plaintext,
        "limits": limits_view(a.limits),
        "imap_host": a.imap.host,
        "imap_port": a.imap.port,
        "imap_security": a.imap.security,
        "imap_username": a.imap.username,
        "imap_password": a.imap.password,
        "imap_folder": a.imap.folder,
        "poll_interval_sec": a.imap.poll_interval_sec,
        "dkim": None
        if a.dkim_domain is None
        else {
            "domain": a.dkim_domain,
            "selector": a.dkim_selector,
            "private_key": a.dkim_private_key,
        },
    }


def _account(tenant: str, spec: AccountIn) -> Account:
    """The model value of a validated spec, defaults filled in."""
    limits = spec.limits.model_dump() if spec.limits else {}
    imap_default = AccountImap()
    return Account(
        id=spec.id,
        tenant=tenant,
        transport=spec.transport or AccountTransport.SMTP,
        from_=tuple(spec.from_ or ()),
        smtp_host=spec.smtp_host,
        smtp_port=spec.smtp_port,
        smtp_security=spec.smtp_security or SmtpSecurity.STARTTLS,
        smtp_auth=spec.smtp_auth or SmtpAuth.PLAIN,
        smtp_username=spec.smtp_username,
        smtp_password=spec.secret("smtp_password"),
        postmark_token=spec.secret("postmark_token"),
        verify_tls=True if spec.verify_tls is None else spec.verify_tls,
        opportunistic_tls=bool(spec.opportunistic_tls),
        auth_plaintext=bool(spec.auth_plaintext),
        limits=replace(AccountLimits(), **limits),
        imap=AccountImap(
            host=spec.imap_host,
            port=spec.imap_port,
            security=spec.imap_security or imap_default.security,
            username=spec.imap_username,
            password=spec.secret("imap_password"),
            folder=spec.imap_folder or imap_default.folder,
            poll_interval_sec=spec.poll_interval_sec or imap_default.poll_interval_sec,
        ),
        dkim_domain=spec.dkim.domain if spec.dkim else None,
        dkim_selector=spec.dkim.selector if spec.dkim else None,
        dkim_private_key=spec.dkim.private_key.get_secret_value() if spec.dkim else None,
    )
