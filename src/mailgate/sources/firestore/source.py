"""The Firestore ``mail`` collection as a source of messages: watch, claim, enqueue.

Documents are found two ways at once: a listener on the whole collection
(:mod:`.listener`, a ``Listen`` stream: new documents in milliseconds, each version
once; a stream opened again resumes where it broke) and a poll every
``poll_interval`` seconds of the documents in a state that needs work (in case the
stream is down for long, and to take over leases their gateway abandoned). A new
document may carry no ``delivery`` field at all (the extension's contract), which no
Firestore query can select; the listener's snapshots are what find those, and a sweep
of the whole collection every ``sweep_interval`` seconds (a page per poll, three fields
read per document) finds any a broken stream missed, or all of them with no listener.

Each document that needs work is:

1. turned into a message (:mod:`.contracts`); a document that fits no contract or is
   invalid is written back as ``ERROR`` with the reason, never only logged;
2. enqueued, durably, under an idempotency key made of its path and the version read
   (``<path>@<update time>``), so a second read, a second gateway sharing the store or
   a restart finds the message already queued instead of queueing it again;
3. leased in a Firestore transaction that checks the document was not changed since
   it was read (another gateway leased it, or the write-back already wrote an outcome):
   ``PROCESSING`` (the extension's ``delivery.state``, the simple contract's
   ``state``), and under ``mailgate`` the key, the message id, the lease owner and
   when the lease ends. A lease that ran out (its gateway died) is taken over by the
   next poll with the same key, so its message is found, not sent again.

Outcomes are written back by :mod:`.writeback`, an outbox consumer. Several gateways
on one collection must share one store (PostgreSQL): the idempotency key is what keeps
a document from being sent twice when two of them read it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from mailgate.errors import MailgateError
from mailgate.ingest.submission import SubmissionReport
from mailgate.sources.firestore.batching import UpdateBatcher, read_documents
from mailgate.sources.firestore.contracts import (
    RETRY_COUNT_FIELD,
    Contract,
    InvalidDocument,
    detect,
    needs_work,
)
from mailgate.sources.firestore.listener import CollectionListener, Found
from mailgate.sources.firestore.reader import DocumentReader

__all__ = ["FirestoreOptions", "FirestoreSource", "PollResult", "SourceStats"]

log = logging.getLogger(__name__)

#: ``submit(items, tenant, source=…)``: :meth:`mailgate.ingest.Submissions.submit`
Submit = Callable[..., Awaitable[SubmissionReport]]
#: ``cancel(message_id, tenant)``: withdraw a message queued for a lease then lost
Cancel = Callable[[str, str], Awaitable[None]]

_MAX_KEY = 255  #: messages.key
#: most documents from the listener handled together (one transaction, one commit)
_GROUP = 500
_GROUPS = 8  #: groups of documents from the listener handled at once
_STEADY = 60.0  #: seconds a stream must have lasted for its re-subscription to wait 1 s again


@dataclass(frozen=True, slots=True)
class FirestoreOptions:
    collection: str = "mail"
    contract: str = "auto"  #: auto, simple or extension
    tenant: str = "default"
    poll_interval: float = 10.0
    lease_seconds: float = 120.0
    max_retry_count: int = 3
    listen: bool = True
    batch: int = 100  #: documents read per poll query
    sweep_interval: float = 300.0  #: seconds between sweeps of the whole collection; 0: none


@dataclass(slots=True)
class PollResult:
    found: int = 0  #: documents the poll's queries returned
    swept: int = 0  #: documents the sweep read (a few fields of each) during this poll
    queued: int = 0  #: of them, enqueued and leased now
    errors: int = 0  #: written back as ERROR (invalid, or fitting no contract)


@dataclass(slots=True)
class SourceStats:
    last_poll_at: datetime | None = None
    last_poll: PollResult = field(default_factory=PollResult)
    stream: str = "off"  #: off, connecting, live, broken
    stream_restarts: int = 0
    documents_queued: int = 0
    documents_invalid: int = 0
    leases_lost: int = 0  #: queued, but another gateway's lease (or a change) came first

    def view(self) -> dict[str, Any]:
        return {
            "last_poll_at": self.last_poll_at.isoformat().replace("+00:00", "Z")
            if self.last_poll_at
            else None,
            "last_poll_found": self.last_poll.found,
            "last_poll_queued": self.last_poll.queued,
            "stream": self.stream,
            "stream_restarts": self.stream_restarts,
            "documents_queued": self.documents_queued,
            "documents_invalid": self.documents_invalid,
            "leases_lost": self.leases_lost,
        }


class FirestoreSource:
    """Watches the collection and queues what needs sending; ``start()`` … ``stop()``."""

    def __init__(
        self,
        client: firestore.AsyncClient,
        listen_client: Callable[[], firestore.AsyncClient] | None,
        reader: DocumentReader,
        submit: Submit,
        cancel: Cancel,
        *,
        options: FirestoreOptions,
        owner: str,
        now: Callable[[], datetime],
    ) -> None:
        self.client = client
        self._updates = UpdateBatcher(client)  #: leases and ERRORs, committed together
        self.reader = reader
        self.submit = submit
        self.cancel = cancel
        self.options = options
        self.owner = owner
        self.now = now
        self._poll_interval = options.poll_interval
        self.stats = SourceStats()
        self.collection = client.collection(options.collection)
        self._arrived: asyncio.Queue[tuple[str, dict[str, Any], datetime]] = asyncio.Queue()
        self._busy: set[str] = set()  #: paths being handled now (the listener and a poll)
        self._failed: set[str] = set()  #: paths the listener found but could not handle
        self._cursors: dict[int, Any] = {}  #: poll query → the last document of its page
        #: where the sweep under way stands: () at its start, (last document read,) later
        self._sweep_cursor: tuple[Any, ...] | None = None
        self._swept_at = -math.inf  #: monotonic time the last sweep ended
        self._poll_now = asyncio.Event()
        self._polled = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self.listener: CollectionListener | None = None
        if options.listen and listen_client is not None:
            self.listener = CollectionListener(
                listen_client, options.collection, self._arrived.put_nowait, self._stream_state
            )

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def start(self) -> None:
        loop_tasks = [self._poll_loop(), self._arrivals()]
        if self.listener is not None:
            loop_tasks.append(self.listener.run())
        self._tasks = [asyncio.create_task(t) for t in loop_tasks]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.stats.stream = "off"

    def _stream_state(self, state: str) -> None:
        if state == "broken":
            self.stats.stream_restarts += 1
        self.stats.stream = state

    @property
    def poll_interval(self) -> float:
        """Seconds between polls; changed at run time (``firestore.poll_interval``)."""
        return self._poll_interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        """A shorter interval ends the wait under way (an hour's, say) instead of
        taking effect after it: the poll that follows is now, the next ones wait the
        new interval."""
        shorter = seconds < self._poll_interval
        self._poll_interval = seconds
        if shorter:
            self._poll_now.set()

    def stats_view(self) -> dict[str, Any]:
        """What ``GET /api/v1/stats`` shows of the source."""
        return {**self.stats.view(), "poll_interval": self.poll_interval}

    async def poll(self) -> PollResult:
        """Poll now (``POST /api/v1/poll``) and wait for that poll's result."""
        async with self._polled:
            self._poll_now.set()
            await self._polled.wait()
        return self.stats.last_poll

    # --- polling ---------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            try:
                result = await self._poll_once()
            except (google_errors.GoogleAPIError, MailgateError, OSError) as exc:
                log.warning("firestore poll failed: %s", _reason(exc))
                result = PollResult()
            except Exception:  # a bug must not end polling: the next poll tries again
                log.exception("firestore poll failed")
                result = PollResult()
            self.stats.last_poll_at, self.stats.last_poll = self.now(), result
            async with self._polled:
                self._polled.notify_all()
            self._poll_now.clear()
            if result.queued and self._cursors:
                continue  # a full page queued mail: more may wait behind it, poll again now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._poll_now.wait()

    async def _poll_once(self) -> PollResult:
        """The documents in a state that needs work, and the leases that ran out.

        Each query reads one page of ``batch`` documents, the next page at the next poll
        (from the start again after the last): its matches include documents that need
        nothing (the simple contract's ``delivery == null`` while leased, ``ERROR`` with
        its tries used up), and a first page full of those must not hide the rest."""
        result = PollResult()
        now = self.now()
        seen: set[str] = set()
        for index, query in enumerate(self._poll_queries(now)):
            page = query.limit(self.options.batch)
            if (cursor := self._cursors.pop(index, None)) is not None:
                page = page.start_after(cursor)
            count, found = 0, []
            async for snap in page.stream():
                count += 1
                if count == self.options.batch:
                    self._cursors[index] = snap
                if snap.reference.path not in seen:
                    seen.add(snap.reference.path)
                    found.append(_found(snap))
            result.found += len(found)
            self._count(result, await self._consider_many(found))
        await self._sweep(result)
        await self._retry_failed(result)
        return result

    async def _sweep(self, result: PollResult) -> None:
        """One page of the sweep, when one is under way or due: the whole collection in
        name order, ``delivery``, ``state`` and ``mailgate`` read of each. A document with
        none of them is new and no query can select it; it is read whole and handled.
        The listener finds those in milliseconds; the sweep is for what a broken stream
        missed, and is the only way to find them with the listener off."""
        interval = self.options.sweep_interval
        if interval <= 0:
            return
        if self._sweep_cursor is None:
            if time.monotonic() - self._swept_at < interval:
                return
            self._sweep_cursor = ()  # a sweep begins
        page = (
            self.collection.order_by("__name__")
            .select(["delivery", "state", "mailgate"])
            .limit(self.options.batch)
        )
        if self._sweep_cursor:
            page = page.start_after(self._sweep_cursor[0])
        count, last, new = 0, None, []
        async for snap in page.stream():
            count, last = count + 1, snap
            if not (snap.to_dict() or {}):
                new.append(snap.reference.path)
        result.swept += count
        if count < self.options.batch or last is None:
            self._sweep_cursor, self._swept_at = None, time.monotonic()
        else:
            self._sweep_cursor = (last,)
        found = await self._read(new)
        result.found += len(found)
        self._count(result, await self._consider_many(found))

    async def _retry_failed(self, result: PollResult) -> None:
        """Read again and handle the documents found before but not handled then (a
        passing failure; a new extension document has no field a poll can select)."""
        paths, self._failed = self._failed, set()
        self._count(result, await self._consider_many(await self._read(sorted(paths))))

    async def _read(self, paths: Sequence[str]) -> list[Found]:
        """The documents at ``paths`` that exist, read in one request per 100; those that
        could not be read now are left to the next poll."""
        found: list[Found] = []
        for start in range(0, len(paths), 100):
            chunk = paths[start : start + 100]
            try:
                snaps = await read_documents(self.client, chunk)
            except (google_errors.GoogleAPIError, OSError) as exc:
                self._failed.update(chunk)
                log.warning("firestore: %d document(s) not read now (%s); the next poll"
                            " retries", len(chunk), _reason(exc))  # fmt: skip
            else:
                found += [_found(snap) for snap in snaps.values() if snap.exists]
        return found

    @staticmethod
    def _count(result: PollResult, outcomes: Sequence[str]) -> None:
        result.queued += outcomes.count("queued")
        result.errors += outcomes.count("error")

    def _poll_queries(self, now: datetime) -> list[Any]:
        c = self.collection
        return [
            c.where(filter=FieldFilter("delivery", "==", None)),  # simple: not sent yet
            c.where(filter=FieldFilter("state", "==", "ERROR")),  # simple: to retry
            c.where(filter=FieldFilter("delivery.state", "==", "PENDING")),  # extension
            c.where(filter=FieldFilter("mailgate.leaseExpireTime", "<", now)),  # abandoned
        ]

    # --- listening ---------------------------------------------------------------------

    async def _arrivals(self) -> None:
        """Handle what the listener found: up to :data:`_GROUPS` groups at once, each of
        the documents that arrived meanwhile (up to :data:`_GROUP`), whose messages are
        queued in one transaction and leases written in one commit. One document at a
        time when they come one by one; hundreds together in a burst."""
        running: set[asyncio.Task[None]] = set()
        while True:
            first = await self._arrived.get()
            while len(running) >= _GROUPS:  # meanwhile more arrive: the group grows
                _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            group: dict[str, Found] = {first[0]: first}
            while len(group) < _GROUP and not self._arrived.empty():
                path, data, version = self._arrived.get_nowait()
                group[path] = (path, data, version)  # the latest version of each
            task = asyncio.create_task(self._consider_group(list(group.values())))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _consider_group(self, group: list[Found]) -> None:
        try:
            await self._consider_many(group)
        except Exception:  # a bug must not end the listener's work nor lose documents
            self._failed.update(p for p, _, _ in group)
            log.exception("firestore: %d document(s) not handled now; the next poll"
                          " retries", len(group))  # fmt: skip

    # --- one document ----------------------------------------------------------------

    async def _consider_many(self, docs: Sequence[Found]) -> list[str]:
        """Handle documents as read: for each ``queued``, ``error``, ``skipped`` or
        ``failed`` (not handled now: left to the next poll). The messages of those that
        need work are queued together, their leases committed together."""
        outcomes = ["skipped"] * len(docs)
        taken = {p for p, _, _ in docs} - self._busy
        self._busy.update(taken)
        try:
            work: list[_Work] = []
            errors: list[tuple[int, Contract | None, str]] = []
            for index, (path, data, version) in enumerate(docs):
                if path in taken:
                    self._triage(index, path, data, version, work, errors)
            work = await self._build(work, errors, outcomes)
            if work:
                work = await self._queue(work, errors, outcomes)
            await asyncio.gather(
                *(self._error(docs[i], why, reason, outcomes, i) for i, why, reason in errors)
            )
            await asyncio.gather(*(self._take(w, outcomes) for w in work))
        finally:
            self._busy.difference_update(taken)
        return outcomes

    def _triage(
        self,
        index: int,
        path: str,
        data: dict[str, Any],
        version: datetime,
        work: list[_Work],
        errors: list[tuple[int, Contract | None, str]],
    ) -> None:
        """Whether a document needs work (into ``work``), is wrong (into ``errors``) or
        needs nothing."""
        now = self.now()
        ours = data.get("mailgate") if isinstance(data.get("mailgate"), dict) else None
        lease_end = ours.get("leaseExpireTime") if ours else None
        final = ours.get("final") if ours else False
        if isinstance(lease_end, datetime) and lease_end > now:
            return  # leased, by this gateway or another
        takeover = (
            ours is not None
            and not final
            and isinstance(lease_end, datetime)
            and _may_be_key_of(path, ours.get("key"))
        )
        contract = self._contract(data)
        if contract is None:
            if ours is None and not _looks_final(data):
                errors.append((index, None, "the document fits neither the simple nor the"
                                            " extension contract"))  # fmt: skip
            return
        if not takeover and not needs_work(
            data, contract, now=now, max_retry_count=self.options.max_retry_count
        ):
            return
        key = str(ours["key"]) if takeover and ours and ours.get("key") else _key(path, version)
        work.append(_Work(index, path, data, version, contract, key))

    async def _build(
        self, work: list[_Work], errors: list[tuple[int, Contract | None, str]], outcomes: list[str]
    ) -> list[_Work]:
        """Each document's message; the invalid ones into ``errors``."""
        built = await asyncio.gather(
            *(self.reader.message(w.data, w.contract, w.path) for w in work),
            return_exceptions=True,
        )
        ready = []
        for w, item in zip(work, built, strict=True):
            if isinstance(item, InvalidDocument):
                errors.append((w.index, w.contract, str(item)))
            elif isinstance(item, BaseException):
                self._not_now(w.path, item, outcomes, w.index)
            else:
                w.item = {**item, "id": w.key}
                ready.append(w)
        return ready

    async def _queue(
        self, work: list[_Work], errors: list[tuple[int, Contract | None, str]], outcomes: list[str]
    ) -> list[_Work]:
        """The messages queued in one transaction; those refused into ``errors``."""
        try:
            report = await self.submit([w.item for w in work], self.options.tenant,
                                       source=[f"firestore:{w.path}" for w in work])  # fmt: skip
        except (MailgateError, OSError) as exc:
            for w in work:
                self._not_now(w.path, exc, outcomes, w.index)
            return []
        refused = {r.index: r.reason for r in report.rejected}
        accepted = [i for i in range(len(work)) if i not in refused]
        duplicates = set(report.duplicates)
        for i, message_id in zip(accepted, report.ids, strict=True):
            work[i].message_id, work[i].duplicate = message_id, i in duplicates
        for i, reason in refused.items():
            errors.append((work[i].index, work[i].contract, reason))
        return [work[i] for i in accepted]

    async def _take(self, w: _Work, outcomes: list[str]) -> None:
        """Lease the document of a queued message; withdraw the message if another
        gateway leased the document first."""
        try:
            leased = await self._lease(w.path, w.version, w.contract, w.key, w.message_id)
        except (google_errors.GoogleAPIError, OSError) as exc:
            self._not_now(w.path, exc, outcomes, w.index)  # queued: found again, not re-sent
            return
        if not leased:
            self.stats.leases_lost += 1
            # queued for a document leased with another message (it changed since it was
            # read): withdraw ours. Another gateway that read the same version leased it
            # with this very message (same key): withdrawing it would strand the document.
            if not w.duplicate and not await self._leased_with(w):
                with contextlib.suppress(MailgateError):
                    await self.cancel(w.message_id, self.options.tenant)
            return
        outcomes[w.index] = "queued"
        self.stats.documents_queued += 1
        log.info("firestore %s: queued as message %s (%s) to %s", w.path,
                 w.message_id, w.contract.value, _recipients(w.item))  # fmt: skip

    async def _leased_with(self, w: _Work) -> bool:
        """Whether the document, whose lease this gateway lost, is now leased with (or was
        written back for) ``w``'s message. When it cannot be read now, True: keeping a
        message the document may own is safe, withdrawing it is not."""
        try:
            snaps = await read_documents(self.client, [w.path])
        except (google_errors.GoogleAPIError, OSError) as exc:
            log.warning("firestore document %s: lease lost and not read now (%s); message"
                        " %s is kept", w.path, _reason(exc), w.message_id)  # fmt: skip
            return True
        snap = snaps.get(w.path)
        ours = (snap.to_dict() or {}).get("mailgate") if snap is not None and snap.exists else None
        return isinstance(ours, dict) and ours.get("messageId") == w.message_id

    async def _error(
        self, doc: Found, contract: Contract | None, reason: str, outcomes: list[str], index: int
    ) -> None:
        path, _, version = doc
        try:
            await self._write_error(path, version, contract, reason)
        except (google_errors.GoogleAPIError, OSError) as exc:
            self._not_now(path, exc, outcomes, index)
        else:
            outcomes[index] = "error"

    def _not_now(self, path: str, exc: BaseException, outcomes: list[str], index: int) -> None:
        """A document not handled now (a passing failure, or a bug): the next poll reads
        it again."""
        outcomes[index] = "failed"
        self._failed.add(path)
        if isinstance(exc, google_errors.GoogleAPIError | MailgateError | OSError):
            log.warning("firestore document %s: not handled now (%s); the next poll retries",
                        path, _reason(exc))  # fmt: skip
        else:
            log.error("firestore document %s: not handled now; the next poll retries",
                      path, exc_info=exc)  # fmt: skip

    def _contract(self, data: Mapping[str, Any]) -> Contract | None:
        if self.options.contract != "auto":
            return Contract(self.options.contract)
        ours = data.get("mailgate")
        if isinstance(ours, dict) and ours.get("contract") in ("simple", "extension"):
            return Contract(ours["contract"])
        return detect(data)

    async def _lease(
        self, path: str, version: datetime, contract: Contract, key: str, message_id: str
    ) -> bool:
        """Mark the document PROCESSING if it is still the version read."""
        expires = self.now() + timedelta(seconds=self.options.lease_seconds)
        fields: dict[str, Any] = {
            "mailgate": {
                "key": key,
                "messageId": message_id,
                "owner": self.owner,
                "contract": contract.value,
                "leaseExpireTime": expires,
                "final": False,
            }
        }
        if contract is Contract.EXTENSION:
            fields["delivery.state"] = "PROCESSING"
            fields["delivery.startTime"] = firestore.SERVER_TIMESTAMP
            fields["delivery.leaseExpireTime"] = expires
            fields["delivery.error"] = None
        else:
            fields["state"] = "PROCESSING"
        # False: changed since it was read (leased elsewhere, or written back)
        return await self._updates.update(path, fields, version)

    async def _write_error(
        self, path: str, version: datetime, contract: Contract | None, reason: str
    ) -> None:
        """A document that cannot be sent: ERROR with the reason, on the document."""
        self.stats.documents_invalid += 1
        log.warning("firestore %s: not sent: %s", path, reason)
        fields: dict[str, Any] = {
            "mailgate": {"final": True, "error": reason, "contract": contract and contract.value}
        }
        if contract is Contract.SIMPLE:
            fields.update(
                {
                    # retrying will not make it valid: no more tries unless someone resets it
                    RETRY_COUNT_FIELD: self.options.max_retry_count,
                    "state": "ERROR",
                    "delivery": {
                        "success": False,
                        "timestamp": firestore.SERVER_TIMESTAMP,
                        "error": reason,
                    },
                }
            )
        else:
            fields.update(
                {
                    "delivery.state": "ERROR",
                    "delivery.error": reason,
                    "delivery.endTime": firestore.SERVER_TIMESTAMP,
                }
            )
        await self._updates.update(path, fields, version)  # False: changed since, leave it


@dataclass(slots=True)
class _Work:
    """A document that needs work, on its way to being queued and leased."""

    index: int  #: among the documents handled together
    path: str
    data: dict[str, Any]
    version: datetime
    contract: Contract
    key: str  #: the message's idempotency key
    item: dict[str, Any] = field(default_factory=dict)  #: the message JSON
    message_id: str = ""
    duplicate: bool = False  #: the key was queued before (a second read, a takeover)


def _found(snap: Any) -> Found:
    return snap.reference.path, snap.to_dict() or {}, snap.update_time


def _key(path: str, version: datetime) -> str:
    """The idempotency key of one version of a document."""
    key = f"firestore:{path}@{version.isoformat()}"
    if len(key) <= _MAX_KEY:
        return key
    return "firestore:sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _may_be_key_of(path: str, key: object) -> bool:
    """Whether ``key`` (a lease's ``mailgate.key``) can be one :func:`_key` made for the
    document at ``path``: a document copied with another's lease must not be taken over
    under the other's key, whose message (the other's, sent) is not this document's."""
    if key is None:
        return True  # no key: the takeover queues under the version's own
    if not isinstance(key, str):
        return False
    prefix = f"firestore:{path}@"
    if key.startswith(prefix):
        return True
    longest_version = len("0001-01-01T00:00:00.000000+00:00")
    return key.startswith("firestore:sha256:") and len(prefix) + longest_version > _MAX_KEY


def _looks_final(data: Mapping[str, Any]) -> bool:
    delivery = data.get("delivery")
    return data.get("state") in ("SENT", "ERROR") or (
        isinstance(delivery, dict) and delivery.get("state") in ("SUCCESS", "ERROR")
    )


def _recipients(item: Mapping[str, Any], shown: int = 5) -> str:
    """The message's recipients for a log line (never its content): the first few."""
    everyone: list[str] = []
    for key in ("to", "cc", "bcc"):
        value = item.get(key)
        everyone += [value] if isinstance(value, str) else [str(v) for v in value or []]
    more = f" and {len(everyone) - shown} more" if len(everyone) > shown else ""
    return ", ".join(everyone[:shown]) + more


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
