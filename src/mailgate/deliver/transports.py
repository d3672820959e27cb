"""Build the transport for one account: its SMTP server (with a pool) or Postmark.

The router caches what this returns per (tenant, account, version) and calls
``aclose()`` when the account changes or goes away; nothing here caches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailgate.deliver.pool import PoolBoard, PoolLimits
from mailgate.deliver.smtp import SmtpTransport
from mailgate.deliver.transport import Transport
from mailgate.errors import ConfigError
from mailgate.model import Account, AccountTransport
from mailgate.settings import DeliverySettings, PostmarkSettings

if TYPE_CHECKING:  # imported with the first Postmark account: it brings httpx
    from mailgate.deliver.postmark import PostmarkTransport

__all__ = ["pool_limits", "transport_for"]


def transport_for(
    account: Account,
    *,
    settings: DeliverySettings,
    local_hostname: str,
    postmark: PostmarkSettings | None = None,
    board: PoolBoard | None = None,
) -> Transport:
    """A new transport for ``account``; :class:`ConfigError` if the account lacks what it
    needs (an SMTP host and port, a Postmark token). An SMTP transport's pool is shown
    on ``board`` (``GET /api/v1/stats``) when one is given."""
    if account.transport is AccountTransport.POSTMARK:
        return _postmark(account, postmark or PostmarkSettings())
    if not account.smtp_host or not account.smtp_port:
        raise ConfigError(f"account {account.id!r} has no SMTP host and port")
    smtp = SmtpTransport(
        account,
        limits=pool_limits(account, settings),
        timeout=settings.smtp_timeout,
        local_hostname=local_hostname,
    )
    if board is not None:
        board.track(account.tenant, account.id, smtp)
    return smtp


def pool_limits(account: Account, settings: DeliverySettings) -> PoolLimits:
    """The account's pool size with the process-wide idle, age and NOOP settings."""
    return PoolLimits(
        size=max(1, account.limits.pool_size),
        idle_timeout=settings.pool_idle_timeout,
        max_age=settings.pool_max_age,
        noop_after=settings.pool_noop_after,
    )


def _postmark(account: Account, settings: PostmarkSettings) -> PostmarkTransport:
    if not account.postmark_token:
        raise ConfigError(f"account {account.id!r} has no Postmark token")
    from mailgate.deliver.postmark import PostmarkTransport

    return PostmarkTransport(
        account.postmark_token, base_url=settings.base_url, timeout=settings.timeout
    )
