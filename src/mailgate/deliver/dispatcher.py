"""The dispatcher: lease due messages, send each through its route, record the outcome.

At-least-once: a message is leased before it is sent and settled after; if this
process dies in between, the lease expires and another dispatcher sends it again.
A send that outlives half its lease renews it, so a slow upstream never makes a
second dispatcher send the same message.

One attempt, as named steps (:meth:`Dispatcher.deliver`): route → (wait? release)
→ pace (over the account's limit? release) → send → classify → decide → record.
Waiting for an account or a rate limit is not trying: a released message keeps its
attempt count and gets no attempt row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from mailgate.clock import Clock
from mailgate.deliver.attachments import AttachmentUnavailable, unavailable_result
from mailgate.deliver.router import Route, Routes
from mailgate.deliver.tracing import attempt_span
from mailgate.deliver.transport import Envelope, Outgoing, Prepare, Transport
from mailgate.errors import CommitOutcomeUnknown, StoreUnavailable, UnbuildableMessage
from mailgate.metrics import Metrics
from mailgate.mime import build_message
from mailgate.model import Account, Attempt, FailureClass, Outcome, SendResult, State, mailbox
from mailgate.policy import (
    ACCOUNT_PROBLEMS,
    Decision,
    RetryPolicy,
    attempt_class,
    decide,
    recipient_outcomes,
)
from mailgate.settings import DeliverySettings
from mailgate.store import Job, QueueStore

__all__ = ["Dispatcher", "Pacing"]

log = logging.getLogger(__name__)


class Pacing(Protocol):
    """What the dispatcher asks of ``mailgate.deliver.pacing.Pacer``."""

    async def reserve(self, account: Account, now: datetime) -> datetime | None:
        """None: a token was taken, send now; else the earliest time worth trying again."""
        ...

    def throttled(self, account: Account, now: datetime) -> None:
        """The account's server said "slow down" (421, 4.7.x, rate words)."""
        ...


#: leased messages an account may hold per connection of its pool: one sending, one ready
_READY_PER_CONNECTION = 2
#: an account is leased for again once this share of its pool's worth is free: each lease
#: is a write transaction of its own, so leasing one message per finished send would
#: cost a lease per message (measured: 1.2 messages a lease, a third of the CPU)
_LEASE_AT_LEAST = 0.5
#: a token due this soon is waited for with the lease held, instead of a release
_PACE_IN_PLACE = 1.0
_PACE_TRIES = 4  #: tokens may go to other processes meanwhile: then release
#: first and longest wait before recording a sent message's outcome again, when the store
#: was unavailable (seconds; doubled each time)
_RECORD_RETRY = (0.5, 10.0)


class _Unpaced:
    async def reserve(self, account: Account, now: datetime) -> datetime | None:
        return None

    def throttled(self, account: Account, now: datetime) -> None:
        return None


class Dispatcher:
    def __init__(
        self,
        queue: QueueStore,
        router: Routes,
        *,
        retry: RetryPolicy,
        settings: DeliverySettings,
        clock: Clock,
        owner: str,
        prepare: Prepare | None = None,
        pacer: Pacing | None = None,
        metrics: Metrics | None = None,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self.router = router
        self.retry = retry
        self.settings = settings
        self.clock = clock
        self.owner = owner
        self.prepare = prepare  #: resolves url/path attachments and DKIM at send time
        self.pacer: Pacing = pacer or _Unpaced()
        self.metrics = metrics  #: Prometheus counters of attempts (``mailgate.metrics``)
        #: an outcome and the outbox events reporting it were written: the composition
        #: root wakes this process's webhook sender with it, instead of its next poll
        self.on_recorded = on_recorded
        self._pacing: set[tuple[str, str]] = set()  #: accounts with a send waiting in place
        self._held: Counter[tuple[str, str]] = Counter()  #: leased jobs per account named
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._express: set[asyncio.Task[None]] = set()  #: the slot kept for urgent mail
        self._submitted = False  #: wake() was called: new mail may need the express slot
        self._background: set[asyncio.Task[None]] = set()  #: account wake-ups
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """New work may be due: scan the queue now instead of at the next poll."""
        self._submitted = True
        self._wake.set()

    def account_changed(self, tenant: str, account_id: str) -> None:
        """An account was changed or enabled: its waiting messages are due now, not at
        their next re-check (``account_recheck``)."""
        task = asyncio.create_task(self._wake_account(tenant, account_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wake_account(self, tenant: str, account_id: str) -> None:
        try:
            if await self.queue.wake_waiting(tenant, account_id, self.clock.now()):
                self.wake()
        except Exception as exc:  # the re-check still comes
            log.warning("could not wake the messages of account %s: %s", account_id, exc)

    @property
    def running(self) -> bool:
        """Whether its loop is leasing (started, not stopped, not crashed)."""
        task = self._loop_task
        return task is not None and not task.done() and not self._stopping

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="mailgate-dispatcher")

    async def stop(self) -> None:
        """Lease nothing more; let in-flight sends finish and record their outcome."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._inflight or self._express:
            await asyncio.gather(*self._inflight, *self._express, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            # Clear before looking at the queue: a wake() that arrives while we lease
            # or compute the sleep then cuts the sleep short instead of being lost.
            self._wake.clear()
            try:
                leased = await self._lease_batch()
            except StoreUnavailable as exc:  # an outage, not a bug: no traceback every poll
                log.warning("cannot lease from the queue (%s); retrying", exc)
                leased = 0
            except Exception:
                log.exception("leasing from the queue failed; retrying after the poll interval")
                leased = 0
            if self._stopping:
                break
            if leased and self._can_lease() and self._wake.is_set():
                continue  # a send finished meanwhile with room for more: lease again
            await self._sleep()

    def _can_lease(self) -> bool:
        """Lease in batches: wait until a quarter of the slots are free (or all are idle).

        Leasing one message per finished send would run a claim query per message.
        """
        free = self.settings.concurrency - len(self._inflight)
        return free > 0 and (not self._inflight or free >= max(1, self.settings.concurrency // 4))

    async def _lease_batch(self) -> int:
        if not self._can_lease():
            return await self._lease_express()
        free = self.settings.concurrency - len(self._inflight)
        jobs = await self.queue.lease(
            self.owner, self.clock.now(), free, self.settings.lease_seconds, budget=self._budget
        )
        for job in jobs:
            self._start(job, self._inflight)
        return len(jobs)

    def _budget(self, tenant: str, account: str) -> int | None:
        """What the account named ``account`` can still take on: twice its pool size
        (one message sending and one ready per connection, so a freed connection never
        waits for a lease) less what this dispatcher holds for it. The rest of its
        backlog stays free for other dispatchers, and slots for other accounts.

        Below half a pool's worth it is 0: the account's sends refill its budget, and
        it is leased for in batches (see :data:`_LEASE_AT_LEAST`)."""
        capacity = self.router.capacity(tenant, account)
        if capacity is None:
            return None
        free = _READY_PER_CONNECTION * capacity - self._held[(tenant, account)]
        return free if free >= _min_lease(capacity) else 0

    async def _lease_express(self) -> int:
        """One slot beyond ``concurrency`` for a message due now while the batch waits.

        The queue leases by priority, so an ``immediate`` message submitted while every
        slot is busy goes out at once instead of after a quarter of them free up. Only
        new mail can need it: a finished send does not lease here (the batch rule holds).
        """
        if self._express or not self._submitted:
            return 0
        self._submitted = False
        jobs = await self.queue.lease(self.owner, self.clock.now(), 1, self.settings.lease_seconds)
        for job in jobs:
            self._start(job, self._express)
        return len(jobs)

    def _start(self, job: Job, slots: set[asyncio.Task[None]]) -> None:
        key = (job.message.tenant, job.message.account)
        self._held[key] += 1
        task = asyncio.create_task(self.deliver(job))
        slots.add(task)
        task.add_done_callback(lambda t: self._done(t, slots, key))

    def _done(
        self, task: asyncio.Task[None], slots: set[asyncio.Task[None]], key: tuple[str, str]
    ) -> None:
        slots.discard(task)
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        if self._worth_leasing(key):
            self._wake.set()

    def _worth_leasing(self, key: tuple[str, str]) -> bool:
        """After a send of ``key``'s account: is a lease now worth its transaction?

        Yes when that account has room for a batch again, or when the freed slot is the
        one that lets the dispatcher lease for other accounts (or it is idle). Otherwise
        the next finished send asks again: no lease query per message.
        """
        if not self._inflight:
            return True
        free = self.settings.concurrency - len(self._inflight)
        if free == max(1, self.settings.concurrency // 4):
            return True
        budget = self._budget(*key)  # 0 until the account has room for a batch again
        return budget != 0 and self._can_lease()

    async def _sleep(self) -> None:
        timeout = self.settings.poll_interval
        if self._can_lease():  # otherwise a finishing send wakes us
            try:
                due = await self.queue.next_due()
            except Exception:
                due = None
            if due is not None:
                timeout = min(timeout, max((due - self.clock.now()).total_seconds(), 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def deliver(self, job: Job) -> None:
        """The whole life of one attempt on a leased job (see the module docstring)."""
        route = await self._route(job)
        if route is None or not await self._pace(job, route):
            return
        assert route.transport is not None
        started = time.monotonic()
        async with self._renewing(job):
            result = await self._send(route.transport, self._outgoing(job))
        failure = attempt_class(result, job.pending)
        now = self.clock.now()
        decision = self._decide(job, route, result, failure, now)
        attempt = self._attempt(route, job, result, failure, decision, started, now)
        await self._account_health(route, result, failure, attempt.at)
        if await self._record(job, attempt, decision):
            log.info(
                "%s %s via %s to %d recipients: %s",
                job.message.id,
                decision.state,
                attempt.transport,
                len(job.pending),
                result.detail,
                extra={
                    "message_id": job.message.id,
                    "account": attempt.account,
                    "recipients": len(job.pending),
                    "addresses": job.pending,  # the text format names them; JSON does not
                },
            )
            self._observe(job, attempt, decision, time.monotonic() - started)

    def _observe(self, job: Job, attempt: Attempt, decision: Decision, seconds: float) -> None:
        """The recorded attempt in the metrics: its outcome, duration and, when it
        finished the message, the time since the message was queued."""
        if self.metrics is None:
            return
        final = decision.state in (State.SENT, State.FAILED)
        latency = (attempt.at - job.message.created_at).total_seconds() if final else None
        self.metrics.attempt(
            account=attempt.account or "-",
            outcome=str(decision.state),
            failure_class=attempt.failure_class,
            seconds=seconds,
            latency=latency,
        )

    async def _route(self, job: Job) -> Route | None:
        """The message's route, or None once it was released to wait for its account."""
        try:
            route = await self.router.route(job.message)
        except Exception as exc:  # the account directory is unreachable: try again soon
            log.warning("cannot route %s (%s); it waits", job.message.id, exc)
            await self._release(job, self.settings.poll_interval, f"cannot route: {exc}")
            return None
        if route.wait is not None:
            await self._release(job, self.settings.account_recheck, route.wait)
            return None
        return route

    async def _pace(self, job: Job, route: Route) -> bool:
        """Take a token from the account's rate limit; over it, release until it refills.

        One send per account may wait in place for a token due within
        :data:`_PACE_IN_PLACE` seconds: at 60/min and faster, releasing and leasing again
        costs more than the wait and makes sends late (600/min ran 35 % slow that way).
        Any other waits are released at once, so a paced backlog never holds the slots
        other accounts' mail needs.
        """
        account = route.account
        if account is None:
            return True
        key = (account.tenant, account.id)
        in_place = key not in self._pacing
        if in_place:
            self._pacing.add(key)
        try:
            return await self._take_token(job, account, in_place)
        finally:
            if in_place:
                self._pacing.discard(key)

    async def _take_token(self, job: Job, account: Account, in_place: bool) -> bool:
        for _ in range(_PACE_TRIES if in_place else 1):
            now = self.clock.now()
            until = await self.pacer.reserve(account, now)
            if until is None:
                return True
            wait = max((until - now).total_seconds(), 0.0)
            if not in_place or wait > _PACE_IN_PLACE:
                break
            await asyncio.sleep(wait)
        await self._release(job, wait, f"rate limit of account {account.id!r}")
        return False

    async def _release(self, job: Job, seconds: float, reason: str) -> None:
        now = self.clock.now()
        until = now + timedelta(seconds=seconds)
        try:
            if not await self.queue.release(job, self.owner, until, reason, now=now):
                log.warning("lease on %s was lost before it was released", job.message.id)
        except Exception:
            log.exception("could not release %s; its lease will expire", job.message.id)

    @contextlib.asynccontextmanager
    async def _renewing(self, job: Job) -> AsyncIterator[None]:
        """Renew the job's lease every half lease while the block (the send) runs.

        A timer, not a task per send: a task is started only if the send outlives half
        the lease, which almost none do.
        """
        renewer: asyncio.Task[None] | None = None

        def start() -> None:
            nonlocal renewer
            renewer = asyncio.create_task(self._renew(job))

        timer = asyncio.get_running_loop().call_later(self.settings.lease_seconds / 2, start)
        try:
            yield
        finally:
            timer.cancel()
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer

    async def _renew(self, job: Job) -> None:
        """Renew now, then every half lease until cancelled."""
        lease = self.settings.lease_seconds
        while True:
            try:
                if not await self.queue.renew(job, self.owner, lease, now=self.clock.now()):
                    log.warning("lease on %s was lost while sending it", job.message.id)
                    return
            except Exception as exc:  # the next turn tries again, before the lease ends
                log.warning("could not renew the lease on %s: %s", job.message.id, exc)
            await asyncio.sleep(lease / 2)

    def _outgoing(self, job: Job) -> Outgoing:
        envelope = Envelope(
            sender=job.message.return_path
            if job.message.return_path is not None
            else mailbox(job.message.sender)[1],
            recipients=job.pending,
            message_id=job.message.id,
            tenant=job.message.tenant,
        )
        return Outgoing(job.message, envelope, build_message, prepare=self.prepare)

    async def _send(self, transport: Transport, outgoing: Outgoing) -> SendResult:
        """Hand the message to the transport.

        A message that cannot be built fails for good with the reason (it would fail the
        same way on every retry); a transport that raises has a bug: retry later. The
        attempt is an OpenTelemetry span (``deliver.tracing``).
        """
        try:
            with attempt_span(transport, outgoing) as span:
                return span.record(await transport.send(outgoing))
        except AttachmentUnavailable as exc:  # a url/path attachment: maybe later, maybe never
            log.warning("%s: %s", outgoing.message.id, exc)
            return unavailable_result(exc)
        except UnbuildableMessage as exc:
            log.warning("%s: %s", outgoing.message.id, exc)
            return SendResult(
                Outcome.FAILED, None, None, str(exc), failure_class=FailureClass.CONTENT
            )
        except Exception as exc:  # a bug must not lose the message, nor claim it was sent
            log.exception(
                "transport %s raised while sending %s", transport.name, outgoing.message.id
            )
            return SendResult(
                Outcome.DEFERRED,
                None,
                None,
                f"internal error: {exc!r}",
                failure_class=FailureClass.OTHER,
            )

    def _decide(
        self,
        job: Job,
        route: Route,
        result: SendResult,
        failure: FailureClass | None,
        now: datetime,
    ) -> Decision:
        """The policy's decision, with the account's own retry numbers; an account
        problem (login, TLS) also says why the message waits."""
        retry = self.retry
        if route.account is not None and route.account.limits.retry:
            retry = retry.overridden(route.account.limits.retry)
        decision = decide(
            result,
            pending=job.pending,
            delivered_before=job.delivered,
            attempts=job.attempt_count + 1,
            created_at=job.message.created_at,
            now=now,
            retry=retry,
            draw=random.random(),
            failure=failure,
        )
        if not decision.counted:
            who = f"account {route.account_id!r}" if route.account_id else "the relay"
            reply = f"{result.code} {result.detail}" if result.code else result.detail
            decision = replace(decision, wait_reason=f"{who}: {reply}")
        return decision

    def _attempt(
        self,
        route: Route,
        job: Job,
        result: SendResult,
        failure: FailureClass | None,
        decision: Decision,
        started: float,
        now: datetime,
    ) -> Attempt:
        assert route.transport is not None
        return Attempt(
            at=now,
            transport=route.transport.name,
            code=result.code,
            enhanced_code=result.enhanced_code,
            text=result.detail,
            duration_ms=int((time.monotonic() - started) * 1000),
            recipients=recipient_outcomes(result, job.pending),
            failure_class=failure,
            counted=decision.counted,
            remote_id=result.remote_id,
            account=route.account_id,
        )

    async def _account_health(
        self, route: Route, result: SendResult, failure: FailureClass | None, now: datetime
    ) -> None:
        """What this send says about the account: it works, it is broken (login, TLS:
        its health shows the reply), or its server asked it to slow down."""
        if _slows_account(result, failure) and route.account is not None:
            self.pacer.throttled(route.account, now)
        try:
            if failure in ACCOUNT_PROBLEMS or result.config_error:
                await self.router.record_health(route, error=result.detail)
            elif result.status is Outcome.SENT:
                await self.router.record_health(route, ok_at=now)
        except Exception:
            log.exception("could not record the health of account %s", route.account_id)

    async def _record(self, job: Job, attempt: Attempt, decision: Decision) -> bool:
        """Settle the job (its state and the outbox events reporting it, in one
        transaction), then tell ``on_recorded``; False if that did not happen (its lease
        will expire).

        The attempt is over (the mail may have gone): a store unavailable for a moment
        (PostgreSQL restarting, a SQLite file locked by another program) must not make
        its lease expire and the message go out again, so while nothing of the outcome
        was written it is tried again, for up to a lease (the write checks the lease
        still holds), unless the dispatcher is stopping. A commit whose outcome is
        unknown is not written again.
        """
        delay, longest = _RECORD_RETRY
        give_up = time.monotonic() + self.settings.lease_seconds
        while True:
            try:
                recorded = await self.queue.record(job, self.owner, attempt, decision)
                break
            except StoreUnavailable as exc:
                if (
                    isinstance(exc, CommitOutcomeUnknown)
                    or self._stopping
                    or time.monotonic() + delay > give_up
                ):
                    log.warning(
                        "could not record the outcome of %s (%s); its lease will expire",
                        job.message.id,
                        exc,
                    )
                    return False
                log.warning(
                    "could not record the outcome of %s (%s); trying again in %g s",
                    job.message.id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
            except Exception:
                log.exception(
                    "could not record the outcome of %s; its lease will expire", job.message.id
                )
                return False
        if not recorded:
            log.warning("lease on %s was lost before its outcome was recorded", job.message.id)
        elif self.on_recorded is not None:
            self.on_recorded()
        return recorded


def _min_lease(capacity: int) -> int:
    """The fewest messages worth a lease for an account with ``capacity`` connections."""
    return max(1, int(_READY_PER_CONNECTION * capacity * _LEASE_AT_LEAST))


def _slows_account(result: SendResult, failure: FailureClass | None) -> bool:
    """An explicit slow-down said to the account: the transaction (or the connection)
    was refused with 421 or 4.7.x (RFC 3463 §3.8), or throttled without a reply code.

    Not every ``throttled`` attempt slows the account: one recipient's 450 4.2.1
    ("receiving mail at a rate that prevents additional messages") is that mailbox's
    rate, not ours, and "4.3.0 try again later" is the generic greylisting text; those
    defer the message only, instead of holding every message of the account.
    """
    if failure is not FailureClass.THROTTLED or result.status is Outcome.SENT:
        return False
    explicit = result.code == 421 or (result.enhanced_code or "").startswith("4.7.")
    return explicit or result.code is None
