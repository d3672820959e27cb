"""Outcomes written back onto their Firestore documents: an outbox consumer.

The consumer ``firestore`` takes the events of messages whose source is
``firestore:<document path>`` (retries, sent, failed, cancelled, waiting). Each event
becomes one update of its document, made only if the document still belongs to that
message (``mailgate.messageId``; a newer try of the document is not overwritten) and
only if the document did not change between the read and the write (retried if it
did). The event is acknowledged once the document is written (or gone), so a crash
after delivery and before the write-back still writes the outcome after a restart,
and never twice.

What each contract sees:

* extension: ``delivery.state`` ``RETRY`` (with ``attempts``, ``error`` and a lease
  until the next try), ``SUCCESS`` or ``ERROR`` (``endTime``, ``attempts``, ``error``,
  ``info {messageId, accepted, rejected, pending, response}``, ``expireAt`` when a TTL
  is set), as the Trigger Email extension writes them;
* simple: ``state`` ``RETRY``, then ``SENT`` or ``ERROR`` with ``delivery {success,
  timestamp, error}``; an ``ERROR`` counts one try in ``retryCount`` (it is tried
  again until ``max_retry_count``).

Under ``mailgate`` every document also gets the attempt count, the next try, the last
error, and ``final`` once nothing more will happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import firestore

from mailgate.errors import MailgateError
from mailgate.sources.firestore.batching import UpdateBatcher, read_documents
from mailgate.sources.firestore.contracts import RETRY_COUNT_FIELD, Contract, detect
from mailgate.store.outbox import EventKind, OutboxEvent, OutboxStore

__all__ = ["CONSUMER", "FirestoreWriteBack", "WriteBackOptions", "outcome_fields"]

log = logging.getLogger(__name__)

CONSUMER = "firestore"
SOURCE_PREFIX = "firestore:"
KINDS = (
    EventKind.MESSAGE_DEFERRED,
    EventKind.MESSAGE_SENT,
    EventKind.MESSAGE_FAILED,
    EventKind.MESSAGE_CANCELLED,
    EventKind.MESSAGE_WAITING,
)
SIMPLE_RETRIES = RETRY_COUNT_FIELD  #: the simple contract's tries, counted on the document
_TRIES = 3  #: reads and writes of one document before the event is failed for later
_LEASE_WAIT = 3.0  #: seconds a round waits for the leases of the documents it writes


@dataclass(frozen=True, slots=True)
class WriteBackOptions:
    lease_seconds: float = 120.0  #: a document in RETRY stays leased this long past its try
    ttl: timedelta | None = None  #: ``expireAt`` this long after the final outcome
    batch: int = 500  #: outcomes written in one round (one commit): Firestore's most
    poll_interval: float = 0.2
    #: seconds a round waits after the first outcome, so the ones right behind it share
    #: its commit (every commit costs each listener on the collection a snapshot)
    linger: float = 0.05


class FirestoreWriteBack:
    """Drains the ``firestore`` outbox consumer into the documents."""

    def __init__(
        self,
        client: firestore.AsyncClient,
        outbox: OutboxStore,
        *,
        options: WriteBackOptions,
        now: Callable[[], datetime],
    ) -> None:
        self.client = client
        self._updates = UpdateBatcher(client)  #: a round's outcomes, committed together
        self.outbox = outbox
        self.options = options
        self.now = now
        self.written = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await self.outbox.register(
            CONSUMER, self.now(), kinds=[k.value for k in KINDS], source_prefix=SOURCE_PREFIX
        )
        self._task = asyncio.create_task(self._run(), name="mailgate-firestore-writeback")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                busy = await self._round()
            except (MailgateError, OSError) as exc:
                log.warning("firestore write-back: reading the outbox failed: %s", exc)
                busy = False
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_interval):
                    await self._wake.wait()
                    await asyncio.sleep(self.options.linger)

    async def _round(self) -> bool:
        """Write one batch back; whether there was one."""
        now = self.now()
        events = await self.outbox.claim(CONSUMER, now, self.options.batch, 60.0)
        if not events:
            return False
        results = await self._write_all(events)
        done = [e.id for e, error in zip(events, results, strict=True) if error is None]
        if done:
            await self.outbox.ack(CONSUMER, done, self.now())
            self.written += len(done)
        for event, error in zip(events, results, strict=True):
            if error is not None:
                retry_at = self.now() + timedelta(seconds=_backoff(event.attempts))
                await self.outbox.fail(CONSUMER, event.id, error, self.now(), retry_at)
        return True

    async def _write_all(self, events: list[OutboxEvent]) -> list[str | None]:
        """Write ``events`` onto their documents: for each None when done, else why not
        (for later). In passes: the documents still to write are read in one request and
        written in one commit. A commit refused because one of them changed since it
        was read (its lease landed after its message was sent, say) is read and tried
        again whole, and on the last pass each document alone, so that one document
        that keeps changing holds up only itself."""
        results: list[str | None] = [None] * len(events)
        paths = [(e.source or "").removeprefix(SOURCE_PREFIX) for e in events]
        todo = [i for i, e in enumerate(events) if paths[i] and e.message_id is not None]
        refusals = 0
        wait_until = time.monotonic() + _LEASE_WAIT
        while todo:
            waiting = time.monotonic() < wait_until
            try:
                todo, refused = await self._pass(
                    events, paths, todo, alone=refusals == _TRIES - 1, wait_for_lease=waiting
                )
            except (google_errors.GoogleAPIError, OSError) as exc:
                for i in todo:
                    results[i] = f"{type(exc).__name__}: {exc}"[:500]
                return results
            if refused:
                refusals += 1
                if refusals == _TRIES:
                    break
            elif todo:  # only documents whose lease has not landed yet
                await asyncio.sleep(0.1)
        for i in todo:
            results[i] = "the document kept changing while its outcome was written"
        return results

    async def _pass(
        self,
        events: list[OutboxEvent],
        paths: list[str],
        todo: list[int],
        *,
        alone: bool,
        wait_for_lease: bool,
    ) -> tuple[list[int], bool]:
        """One read and one commit (or one commit each, ``alone``): the events left, and
        whether a commit was refused. With ``wait_for_lease``, a document not leased yet
        is left for the next pass: its message was sent before its lease was written
        (the source queues first, then leases), and writing now would make the lease's
        commit be refused, and every other lease of its commit with it."""
        snaps = await read_documents(self.client, [paths[i] for i in todo])
        left: list[int] = []
        writes: list[tuple[int, tuple[str, dict[str, Any], datetime]]] = []
        writing: set[str] = set()
        for i in todo:
            path, snap = paths[i], snaps.get(paths[i])
            if path in writing:
                left.append(i)  # a second event of one document: after the first's write
                continue
            if snap is None or not snap.exists:
                continue  # deleted (or expired by its TTL): nothing to tell
            data = snap.to_dict() or {}
            if wait_for_lease and events[i].attempts == 0 and not _leased(data):
                left.append(i)
                continue
            fields = _fields_for(data, events[i], self.now(), self.options)
            if fields is None:
                continue  # a newer try of the document: this outcome is history
            writing.add(path)
            writes.append((i, (path, fields, snap.update_time)))
        if alone:
            written = await asyncio.gather(
                *(self._updates.commit_all([update]) for _, update in writes)
            )
        elif writes:
            written = [await self._updates.commit_all([u for _, u in writes])] * len(writes)
        else:
            written = []
        for (i, (path, _, _)), ok in zip(writes, written, strict=True):
            if ok:
                log.info("firestore %s: %s written back (message %s)", path,
                         events[i].kind, events[i].message_id)  # fmt: skip
            else:
                left.append(i)
        return sorted(left), not all(written)


def _leased(data: dict[str, Any]) -> bool:
    ours = data.get("mailgate")
    return isinstance(ours, dict) and ours.get("messageId") is not None


def _fields_for(
    data: dict[str, Any], event: OutboxEvent, now: datetime, options: WriteBackOptions
) -> dict[str, Any] | None:
    ours = data.get("mailgate") if isinstance(data.get("mailgate"), dict) else {}
    assert isinstance(ours, dict)
    owner = ours.get("messageId")
    if owner is not None and owner != event.message_id:
        return None
    name = ours.get("contract")
    contract = Contract(name) if name in ("simple", "extension") else detect(data)
    retries = data.get(SIMPLE_RETRIES)
    done = retries if isinstance(retries, int) and not isinstance(retries, bool) else 0
    return outcome_fields(
        contract or Contract.EXTENSION, event, now=now, options=options, simple_tries=done
    )


def outcome_fields(
    contract: Contract,
    event: OutboxEvent,
    *,
    now: datetime,
    options: WriteBackOptions,
    simple_tries: int = 0,
) -> dict[str, Any]:
    """The update that tells the document what ``event`` says happened."""
    p = event.payload
    kind = EventKind(event.kind)
    attempts = int(p.get("attempt") or 0)
    next_at = _time(p.get("next_attempt_at"))
    error = _error(p)
    ours: dict[str, Any] = {"mailgate.messageId": event.message_id}
    if attempts:
        ours["mailgate.attempts"] = attempts
    if kind in (EventKind.MESSAGE_DEFERRED, EventKind.MESSAGE_WAITING):
        until = (next_at or now) + timedelta(seconds=options.lease_seconds)
        ours.update({"mailgate.leaseExpireTime": until, "mailgate.nextAttemptAt": next_at})
        if kind is EventKind.MESSAGE_WAITING:
            ours["mailgate.waitReason"] = p.get("wait_reason")
            if contract is Contract.EXTENSION:
                ours["delivery.leaseExpireTime"] = until
            return ours
        ours["mailgate.lastError"] = error
        if contract is Contract.EXTENSION:
            return {**ours, "delivery.state": "RETRY", "delivery.attempts": attempts,
                    "delivery.error": error, "delivery.leaseExpireTime": until}  # fmt: skip
        return {**ours, "state": "RETRY"}
    sent = kind is EventKind.MESSAGE_SENT
    ours.update(
        {
            "mailgate.final": True,
            "mailgate.leaseExpireTime": None,
            "mailgate.nextAttemptAt": None,
            "mailgate.lastError": None if sent else error,
        }
    )
    if contract is Contract.SIMPLE:
        simple: dict[str, Any] = {
            **ours,
            "state": "SENT" if sent else "ERROR",
            "delivery": {
                "success": sent,
                "timestamp": firestore.SERVER_TIMESTAMP,
                "error": None if sent else error,
            },
        }
        if not sent:
            simple[SIMPLE_RETRIES] = simple_tries + 1
        return simple
    fields: dict[str, Any] = {
        **ours,
        "delivery.state": "SUCCESS" if sent else "ERROR",
        "delivery.endTime": firestore.SERVER_TIMESTAMP,
        "delivery.attempts": attempts,
        "delivery.error": None if sent else error,
        "delivery.leaseExpireTime": None,
        "delivery.info": _info(p),
    }
    if options.ttl is not None:
        fields["delivery.expireAt"] = now + options.ttl
    return fields


def _info(p: dict[str, Any]) -> dict[str, Any]:
    """nodemailer's ``info``, as the extension stores it."""
    recipients = p.get("recipients") or {}
    accepted = [r for r, v in recipients.items() if v.get("status") == "sent"]
    rejected = [r for r, v in recipients.items() if v.get("status") == "failed"]
    pending = [r for r, v in recipients.items() if v.get("status") not in ("sent", "failed")]
    code, text = p.get("code"), p.get("text")
    response = " ".join(str(x) for x in (code, text) if x is not None) or None
    return {
        "messageId": p.get("message_id_header"),
        "accepted": accepted,
        "rejected": rejected,
        "pending": pending,
        "response": response,
    }


def _error(p: dict[str, Any]) -> str | None:
    """What went wrong, as a person reads it: the reason, or the reply with its code."""
    if p.get("reason"):
        return str(p["reason"])
    code, text = p.get("code"), p.get("text")
    if code is None and not text:
        return None
    return " ".join(str(x) for x in (code, text) if x is not None)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _backoff(failures: int) -> float:
    """Seconds before a document's write is tried again: 1 s doubling to 5 min, ±20 %."""
    return min(2.0**failures, 300.0) * random.uniform(0.8, 1.2)
