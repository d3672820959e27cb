"""A pool of open SMTP connections for one account.

Opening a session costs a TCP and often a TLS handshake, EHLO and AUTH: several
round trips per message. The pool keeps sessions open and hands them out again,
within limits that keep it polite and correct:

* at most ``size`` connections at once (the account's ``limits.pool_size``);
* a connection idle longer than ``noop_after`` is checked with NOOP (RFC 5321
  §4.1.1.9) before it carries a message, so a server that silently closed it is
  found before MAIL, not in the middle of a transaction;
* a connection with bytes left over after its last reply is out of step with the
  server: it is closed, never reused;
* a connection idle for ``idle_timeout`` or open for ``max_age`` is closed with
  QUIT (RFC 5321 §4.1.1.10), as Postfix's ``smtp_connection_cache_time_limit`` and
  ``smtp_connection_reuse_time_limit`` do: servers drop idle clients anyway
  (RFC 5321 §4.5.3.2.7: at least 5 minutes), and long sessions pin one server of
  a load-balanced pool.

What the pool did is counted in :class:`PoolStats` (``GET /api/v1/stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import aiosmtplib
from aiosmtplib import SMTPException

__all__ = ["PoolBoard", "PoolLimits", "PoolStats", "Pooled", "SmtpPool"]

#: Seconds QUIT may take before the connection is simply closed.
_QUIT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PoolLimits:
    size: int  #: most open connections (and concurrent sends)
    idle_timeout: float  #: seconds unused before it is closed
    max_age: float  #: seconds open before it is closed
    noop_after: float  #: seconds unused before it is checked with NOOP


@dataclass(slots=True)
class PoolStats:
    created: int = 0  #: connections opened
    reused: int = 0  #: times an open connection carried another message
    closed: int = 0  #: connections closed (QUIT, dropped, expired)
    in_use: int = 0  #: connections carrying a message now
    idle: int = 0  #: open connections waiting for a message

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True, eq=False)
class Pooled:
    """One open session, with the times the pool's limits are measured from."""

    client: aiosmtplib.SMTP
    opened_at: float
    used_at: float
    reused: bool = False  #: taken from the idle list (it may have gone stale)


class SmtpPool:
    """Connections for one account: ``async with pool.slot(): conn = await pool.checkout()``.

    ``connect`` opens and sets up a session (EHLO, STARTTLS, AUTH) or raises; the
    caller classifies that. Every checked-out connection goes back with
    :meth:`checkin` (still good) or :meth:`discard` (broken or unknown state).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[aiosmtplib.SMTP]],
        limits: PoolLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.limits = limits
        self._clock = clock
        self._slots = asyncio.Semaphore(limits.size)
        self._idle: list[Pooled] = []
        self._stats = PoolStats()
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def stats(self) -> PoolStats:
        self._stats.idle = len(self._idle)
        return self._stats

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of ``size`` turns: no more sessions than that are ever open at once."""
        async with self._slots:
            yield

    async def checkout(self) -> Pooled:
        """An open connection: the most recently used good one, or a new one."""
        while self._idle:
            conn = self._idle.pop()
            if await self._still_good(conn):
                self._stats.reused += 1
                self._stats.in_use += 1
                conn.reused = True
                return conn
        return await self.open()

    async def open(self) -> Pooled:
        """A new connection, never one from the idle list (after a stale one failed)."""
        client = await self._connect()
        self._stats.created += 1
        self._stats.in_use += 1
        now = self._clock()
        return Pooled(client, opened_at=now, used_at=now)

    def checkin(self, conn: Pooled) -> None:
        """Back to the idle list while it is open; one past its age is QUIT by the reaper."""
        self._stats.in_use -= 1
        conn.used_at = self._clock()
        if self._closed or not conn.client.is_connected or _unread(conn.client):
            conn.client.close()
            self._stats.closed += 1
            return
        self._idle.append(conn)
        self._changed.set()
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="mailgate-pool-reaper")

    async def discard(self, conn: Pooled) -> None:
        """Close a connection whose state is unknown (dropped, mid-transaction)."""
        self._stats.in_use -= 1
        conn.client.close()
        self._stats.closed += 1

    async def aclose(self) -> None:
        """QUIT every idle connection; connections in use are closed when checked in."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait([self._reaper])  # never swallows a cancel of aclose itself
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(conn) for conn in idle))

    async def _still_good(self, conn: Pooled) -> bool:
        if self._expired(conn) or not conn.client.is_connected:
            await self._quit(conn)
            return False
        if self._clock() - conn.used_at < self.limits.noop_after:
            return True
        try:  # RFC 5321 §4.1.1.9: NOOP, to see the session is still there
            await conn.client.noop()
        except (SMTPException, OSError):
            conn.client.close()
            self._stats.closed += 1
            return False
        return True

    def _expired(self, conn: Pooled) -> bool:
        now = self._clock()
        return (
            now - conn.opened_at >= self.limits.max_age
            or now - conn.used_at >= self.limits.idle_timeout
        )

    def _deadline(self, conn: Pooled) -> float:
        return min(conn.opened_at + self.limits.max_age, conn.used_at + self.limits.idle_timeout)

    async def _reap(self) -> None:
        """Close idle connections as they expire; ends when none is left idle."""
        while self._idle:
            self._changed.clear()
            wait = min(self._deadline(c) for c in self._idle) - self._clock()
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that
            # arrives as the event is set, and aclose() would wait for the next expiry
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._changed.wait()
            expired = [c for c in self._idle if self._expired(c)]
            self._idle = [c for c in self._idle if c not in expired]
            await asyncio.gather(*(self._quit(conn) for conn in expired))

    async def _quit(self, conn: Pooled) -> None:
        """RFC 5321 §4.1.1.10: say goodbye; a peer that does not answer is just closed."""
        self._stats.closed += 1
        if not conn.client.is_connected:
            conn.client.close()
            return
        try:
            await conn.client.quit(timeout=_QUIT_TIMEOUT)
        except (SMTPException, OSError):
            conn.client.close()


def _unread(client: aiosmtplib.SMTP) -> bool:
    """Bytes left after the last reply: the server sent more than one reply (``250`` twice
    after DATA), which the next message's MAIL would read as its own, and every reply
    after it one command late (RFC 5321 §4.2: one reply per command). aiosmtplib drops
    data that arrives between commands, but keeps what came with the reply it parsed."""
    return bool(getattr(client.protocol, "_buffer", b""))


class _HasStats(Protocol):
    @property
    def stats(self) -> PoolStats: ...


class PoolBoard:
    """The pools of one gateway, by ``tenant/account``, for ``GET /api/v1/stats``.

    Held weakly: a transport the router dropped (account changed or deleted) leaves
    the board with it; a rebuilt one takes its key. One board per gateway, never a
    global, so two gateways in one process report only their own.
    """

    def __init__(self) -> None:
        self._pools: weakref.WeakValueDictionary[str, _HasStats] = weakref.WeakValueDictionary()

    def track(self, tenant: str, account: str, pooled: _HasStats) -> None:
        self._pools[f"{tenant}/{account}"] = pooled

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {key: pooled.stats.snapshot() for key, pooled in sorted(self._pools.items())}
