"""Failed AUTH attempts per client address (as Postfix's anvil counts them), turned away
past a limit: :class:`AuthThrottle` counts them in one process (with the checks in
progress), :class:`SharedAuthThrottle` in the store too, so that every ``serve``
process on one store holds one limit (submission's AUTH, the admin UI's login).
:func:`blocked_until` is the arithmetic, on values."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailgate.clock import Clock
from mailgate.errors import StoreError

if TYPE_CHECKING:
    from mailgate.store.auth_failures import AuthFailureStore

__all__ = ["AuthThrottle", "SharedAuthThrottle", "blocked_until"]

log = logging.getLogger(__name__)

_MAX_THROTTLED = 100_000  #: client addresses remembered at most (a flood must not grow it)


def blocked_until(
    newest: Sequence[datetime], max_failures: int, window: timedelta
) -> datetime | None:
    """When an address whose failures in the window are ``newest`` (newest first) may try
    again; None: it may now. It is blocked while ``max_failures`` of them are in the
    window, that is until the ``max_failures``-th newest is ``window`` old; a failure
    after that one only makes the block last longer."""
    if len(newest) < max_failures:
        return None
    return newest[max_failures - 1] + window


class AuthThrottle:
    """Failed AUTH attempts per client address: past ``max_failures`` within ``window``
    seconds the address is turned away (421) until its oldest failure in the window is
    older than that. Kept per process (the store's count is :class:`SharedAuthThrottle`'s).

    Checking a password takes time (a hash, off the loop), so a client could have many
    checked at once, or leave sessions waiting at the password prompt, and so try more
    than ``max_failures`` before the first failure counts. Each check is therefore
    admitted (:meth:`admit`) only while the address's failures plus the checks in
    progress are under the limit, else it waits for one of them to end, and never once
    the address is blocked."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, list[float]] = {}
        self._checking: dict[str, int] = {}
        self._ended: dict[str, asyncio.Event] = {}

    async def admit(
        self, client: str, elsewhere: Callable[[str], Awaitable[int]] | None = None
    ) -> bool:
        """Wait until a password of ``client`` may be checked: True, and the check
        counts as in progress until :meth:`done`; False once the address is blocked.

        ``elsewhere``: the address's failures in the window as counted outside this
        object (the store's, this process's included), asked only when this process's
        own count would admit the check; its exceptions propagate (nothing admitted)."""
        while not self.blocked(client):
            if self._room(client, 0) and elsewhere is not None:
                counted = await elsewhere(client)  # the state is looked at again after
                if counted >= self.max_failures:
                    return False
                if self.blocked(client):
                    break
            else:
                counted = 0
            if self._room(client, counted):
                self._checking[client] = self._checking.get(client, 0) + 1
                return True
            ended = self._ended.setdefault(client, asyncio.Event())
            await ended.wait()
        return False

    def _room(self, client: str, counted: int) -> bool:
        """Whether one more check fits: the failures (this process's, or ``counted``
        when more) plus the checks in progress are under the limit."""
        failures = max(len(self._recent(client)), counted)
        return failures + self._checking.get(client, 0) < self.max_failures

    def done(self, client: str, *, failed: bool) -> None:
        """A check admitted by :meth:`admit` has ended (``failed``: counted as such)."""
        if failed:
            self.failed(client)
        left = self._checking.pop(client, 1) - 1
        if left:
            self._checking[client] = left
        if (ended := self._ended.pop(client, None)) is not None:
            ended.set()  # the waiting look again

    def _recent(self, client: str) -> list[float]:
        since = time.monotonic() - self.window
        recent = [t for t in self._failures.get(client, ()) if t > since]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def blocked(self, client: str) -> bool:
        return len(self._recent(client)) >= self.max_failures

    def failed(self, client: str) -> None:
        recent = self._recent(client)
        now = time.monotonic()
        if len(self._failures) >= _MAX_THROTTLED:
            since = now - self.window
            self._failures = {k: v for k, v in self._failures.items() if v[-1] > since}
        self._failures[client] = [*recent, now][-self.max_failures :]


@dataclass(slots=True)
class _Pending:
    """An address's failures being written here, and the reads of its count under way,
    one at a time (``lock``): a read then finds each of this process's failures either
    in the store or still counted in ``writing``, never in both nor in neither."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writing: int = 0  #: failures counted here whose rows are not committed yet
    users: int = 0  #: reads and writes under way (the entry goes with the last)


class SharedAuthThrottle:
    """:class:`AuthThrottle`'s limit counted through the store: a failure in one process
    counts in every process on the same store (SQLite file or PostgreSQL), so N processes
    behind one load balancer allow ``max_failures`` guesses per address, not N times that.

    What it costs: a successful AUTH writes nothing and reads once (the address's newest
    failures, by index, when its password is about to be checked); a failed one writes
    one row, and learns in the same transaction whether the address is blocked now. An
    address the store says is blocked is remembered here until its block ends by the
    rows read (:func:`blocked_until`), so its next AUTH is refused at once without a
    query. That verdict is never stale in the lenient direction: more failures elsewhere
    only lengthen a block. It can be stale in the strict one, by at most the window,
    only if its rows left the store early (the table's cap under a flood).

    The in-process rule stays whole (:class:`AuthThrottle`, which this wraps): checks in
    progress here count against the limit, and a failure counts here the moment it is
    known, before its row is written. Checks in progress in *other* processes are not
    visible (that would cost a write per successful AUTH): a burst sent to N processes
    at the same instant can have up to N × ``max_failures`` passwords checked before the
    first failures are in the store; after that every process refuses the address.

    The store unavailable while the count is read: :meth:`admit` raises
    :class:`~mailgate.errors.StoreError` and the caller refuses the attempt for now
    (454), never checking a password the limit cannot vouch for. A failure whose row
    cannot be written is logged and still counted in this process.

    Times are this process's clock (``clock``): processes on several hosts need their
    clocks in step (NTP), or the window shifts by their difference."""

    def __init__(
        self, store: AuthFailureStore | None, clock: Clock, max_failures: int, window: float
    ) -> None:
        """``store``: None counts in this process only (an app with no store)."""
        self.store = store
        self.clock = clock
        self.max_failures = max_failures
        self.window = timedelta(seconds=window)
        self.local = AuthThrottle(max_failures, window)
        self._verdicts: dict[str, datetime] = {}  #: address → blocked until (the store's)
        self._writes: set[asyncio.Task[None]] = set()
        #: failures counted here whose rows are being written, per address
        self._pending: dict[str, _Pending] = {}

    def blocked(self, client: str) -> bool:
        """Blocked by this process's count or a verdict of the store's still running; no
        query (an address blocked elsewhere first hears so at :meth:`admit`)."""
        if self.local.blocked(client):
            return True
        until = self._verdicts.get(client)
        if until is None:
            return False
        if until > self.clock.now():
            return True
        del self._verdicts[client]
        return False

    async def admit(self, client: str) -> bool:
        """:meth:`AuthThrottle.admit`, with the store's count of the address's failures."""
        if self.blocked(client):
            return False
        return await self.local.admit(client, None if self.store is None else self._stored)

    async def done(self, client: str, *, failed: bool) -> None:
        """A check admitted by :meth:`admit` has ended; a failure is in the store when
        this returns (or logged as not)."""
        self.local.done(client, failed=failed)
        if failed:
            await self._record(client)

    async def failed(self, client: str) -> None:
        """A failure no check was admitted for (an aborted or malformed exchange)."""
        self.local.failed(client)
        await self._record(client)

    async def aclose(self) -> None:
        """Wait for the failures still being written (after the server has stopped,
        before the store closes)."""
        if self._writes:
            await asyncio.wait(self._writes)

    async def _stored(self, client: str) -> int:
        """The address's failures in the window: the store's, plus this process's whose
        rows are not written yet. Reads and writes of one address take turns here, so the
        count is exact for this process's failures (a write committing during the read
        was counted twice, and the address refused one attempt too early, uncounted)."""
        assert self.store is not None, "asked only of a throttle with a store"
        pending = self._use(client)
        try:
            async with pending.lock:
                now = self.clock.now()
                newest = await self.store.newest(client, now - self.window, self.max_failures)
                counted = len(newest) + pending.writing
        finally:
            self._done_with(client, pending)
        self._judge(client, newest)
        return counted

    async def _record(self, client: str) -> None:
        """Write the failure in a task of its own: a session cancelled meanwhile (its
        client left during the check) does not cut the write short."""
        if self.store is None:
            return
        pending = self._use(client)
        pending.writing += 1
        task = asyncio.get_running_loop().create_task(self._write(client, pending))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

    async def _write(self, client: str, pending: _Pending) -> None:
        assert self.store is not None, "started only by a throttle with a store"
        try:
            async with pending.lock:
                now = self.clock.now()
                try:
                    newest = await self.store.add(client, now, now - self.window, self.max_failures)
                finally:
                    pending.writing -= 1
        except StoreError as exc:
            log.warning(
                "a failed AUTH or login from %s could not be counted in the store (counted"
                " in this process only): %s",
                client,
                exc,
            )
            return
        finally:
            self._done_with(client, pending)
        self._judge(client, newest)

    def _use(self, client: str) -> _Pending:
        pending = self._pending.setdefault(client, _Pending())
        pending.users += 1
        return pending

    def _done_with(self, client: str, pending: _Pending) -> None:
        pending.users -= 1
        if not pending.users:
            self._pending.pop(client, None)

    def _judge(self, client: str, newest: Sequence[datetime]) -> None:
        until = blocked_until(newest, self.max_failures, self.window)
        if until is None:
            return
        if len(self._verdicts) >= _MAX_THROTTLED:  # a verdict forgotten is read again
            now = self.clock.now()
            self._verdicts = {k: v for k, v in self._verdicts.items() if v > now}
            while len(self._verdicts) >= _MAX_THROTTLED:
                del self._verdicts[next(iter(self._verdicts))]
        self._verdicts[client] = until
