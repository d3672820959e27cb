"""The dispatcher: lease due messages, send each through its transport, record the outcome.

At-least-once: a message is leased before it is sent and settled after; if this
process dies in between, the lease expires and another dispatcher sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import parseaddr

from mailgate.clock import Clock
from mailgate.deliver.transport import Envelope, Outgoing, Prepare, Transport
from mailgate.errors import StoreUnavailable, UnbuildableMessage
from mailgate.mime import build_message
from mailgate.model import Attempt, Message, Outcome, SendResult
from mailgate.policy import Decision, RetryPolicy, decide, recipient_outcomes
from mailgate.settings import DeliverySettings
from mailgate.store import Job, QueueStore

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        queue: QueueStore,
        route: Callable[[Message], Transport],
        *,
        retry: RetryPolicy,
        settings: DeliverySettings,
        clock: Clock,
        owner: str,
        prepare: Prepare | None = None,
    ) -> None:
        self.queue = queue
        self.route = route
        self.retry = retry
        self.settings = settings
        self.clock = clock
        self.owner = owner
        self.prepare = prepare  #: resolves url/path attachments and DKIM at send time
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """New work may be due: scan the queue now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="mailgate-dispatcher")

    async def stop(self) -> None:
        """Lease nothing more; let in-flight sends finish and record their outcome."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

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
            if leased and self._can_lease():
                continue  # more may be due right away
            await self._sleep()

    def _can_lease(self) -> bool:
        """Lease in batches: wait until a quarter of the slots are free (or all are idle).

        Leasing one message per finished send would run a claim query per message.
        """
        free = self.settings.concurrency - len(self._inflight)
        return free > 0 and (not self._inflight or free >= max(1, self.settings.concurrency // 4))

    async def _lease_batch(self) -> int:
        if not self._can_lease():
            return 0
        free = self.settings.concurrency - len(self._inflight)
        jobs = await self.queue.lease(
            self.owner, self.clock.now(), free, self.settings.lease_seconds
        )
        for job in jobs:
            task = asyncio.create_task(self.deliver(job))
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(jobs)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

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
        """The whole life of one attempt on a leased job: route, send, decide, record."""
        transport = self.route(job.message)
        started = time.monotonic()
        result = await self._send(transport, self._outgoing(job))
        attempt = self._attempt(transport, job, result, started)
        decision = self._decide(job, result, attempt.at)
        if await self._record(job, attempt, decision):
            log.info(
                "%s %s via %s: %s", job.message.id, decision.state, transport.name, result.detail
            )

    def _outgoing(self, job: Job) -> Outgoing:
        envelope = Envelope(
            sender=parseaddr(job.message.sender)[1],
            recipients=job.pending,
            message_id=job.message.id,
            tenant=job.message.tenant,
        )
        return Outgoing(job.message, envelope, build_message, prepare=self.prepare)

    async def _send(self, transport: Transport, outgoing: Outgoing) -> SendResult:
        """Hand the message to the transport.

        A message that cannot be built fails for good with the reason (it would fail the
        same way on every retry); a transport that raises has a bug: retry later.
        """
        try:
            return await transport.send(outgoing)
        except UnbuildableMessage as exc:
            log.warning("%s: %s", outgoing.message.id, exc)
            return SendResult(Outcome.FAILED, None, None, str(exc))
        except Exception as exc:  # a bug must not lose the message, nor claim it was sent
            log.exception(
                "transport %s raised while sending %s", transport.name, outgoing.message.id
            )
            return SendResult(Outcome.DEFERRED, None, None, f"internal error: {exc!r}")

    def _attempt(
        self, transport: Transport, job: Job, result: SendResult, started: float
    ) -> Attempt:
        return Attempt(
            at=self.clock.now(),
            transport=transport.name,
            code=result.code,
            enhanced_code=result.enhanced_code,
            text=result.detail,
            duration_ms=int((time.monotonic() - started) * 1000),
            recipients=recipient_outcomes(result, job.pending),
        )

    def _decide(self, job: Job, result: SendResult, now: datetime) -> Decision:
        return decide(
            result,
            pending=job.pending,
            delivered_before=job.delivered,
            attempts=job.attempt_count + 1,
            created_at=job.message.created_at,
            now=now,
            retry=self.retry,
            draw=random.random(),
        )

    async def _record(self, job: Job, attempt: Attempt, decision: Decision) -> bool:
        """Settle the job; False if that did not happen (its lease will expire)."""
        try:
            if await self.queue.record(job, self.owner, attempt, decision):
                return True
            log.warning("lease on %s was lost before its outcome was recorded", job.message.id)
        except Exception:
            log.exception(
                "could not record the outcome of %s; its lease will expire", job.message.id
            )
        return False
