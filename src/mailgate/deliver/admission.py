"""``limit_behavior: reject``: refuse over-limit messages at submission instead of queueing.

An account configured to ``wait`` (the default) queues everything and paces its
sends. One configured to ``reject`` admits at most its limits' worth of messages per
window; the rest are refused per item with HTTP 429's meaning (RFC 6585 §4, Too Many
Requests) and a reason naming the limit, so the client can slow down or send later.

Admission is counted in buckets of its own (``admit:…`` rows in ``rate_buckets``)
that hold a whole window and refill smoothly: 60/min admits a burst of 60, then one
a second. A message admitted is counted even if the store then finds its idempotency
key already queued (a resubmission spends admission like a new message).
"""

from __future__ import annotations

from datetime import datetime

from mailgate.deliver.pacing import Pacer, window_limits
from mailgate.deliver.router import Routes
from mailgate.model import Account, Message

__all__ = ["RateAdmission", "limits_text"]


class RateAdmission:
    """Answers :class:`mailgate.ingest.submission.Admission` from the router and the pacer."""

    def __init__(self, routes: Routes, pacer: Pacer) -> None:
        self._routes = routes
        self._pacer = pacer

    async def refusal(self, message: Message, now: datetime) -> str | None:
        """Why ``message`` is refused for rate, or None to queue it.

        The account is the one the message would be sent through, resolved the way the
        dispatcher resolves it; an account that is unknown, disabled or set to ``wait``
        admits everything.
        """
        account = (await self._routes.route(message)).account
        if account is None or account.limits.limit_behavior != "reject":
            return None
        retry_at = await self._pacer.admit(account, 1, now)
        if retry_at is None:
            return None
        wait = max(1, round((retry_at - now).total_seconds()))
        return (
            f"rate limit: account {account.id!r} accepts {limits_text(account)}"
            f" (limit_behavior: reject); try again in {wait} seconds"
        )


def limits_text(account: Account) -> str:
    """``60 per minute, 1000 per day``: the account's configured windows."""
    limits = window_limits(account.limits)
    return ", ".join(f"{n} per {w}" for w, n in limits.items() if n) or "no limit"
