"""A listener on the whole ``mail`` collection: each document once per version.

Firestore's ``Listen`` stream, spoken directly (google-cloud-firestore's async client
has the RPC but not the listener). The library's own listener, ``on_snapshot``, keeps a
decoded copy of every document of the collection and builds a whole sorted snapshot in
a thread of its own on every change; the emulator answers every commit with the whole
result again, so with 1,000 documents in the collection each lease and each write-back
cost that thread a thousand documents decoded and copied, under the GIL the event loop
needs. Here a document the stream sends again unchanged costs a dictionary lookup: only
its name and update time are kept, and its fields are decoded only when that update
time is new.

Nothing here needs a consistent snapshot: every document handed on is handled on its
own (and idempotently), and the source's polls and sweeps find whatever a broken stream
missed. So ``RESET``, ``CURRENT`` and existence filters need no bookkeeping; the resume
token of each consistent point (a global ``NO_CHANGE``) is kept, so a stream broken and
opened again resumes where it was instead of sending the collection again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from google.api_core import exceptions as google_errors
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import (
    ListenRequest,
    ListenResponse,
    StructuredQuery,
    Target,
    TargetChange,
)

__all__ = ["CollectionListener"]

log = logging.getLogger(__name__)

TARGET_ID = 0x6D67  #: "mg", our one target on each stream
_STEADY = 60.0  #: seconds a stream must have lasted for the next subscription to wait 1 s
_MAX_DELAY = 30.0  #: the longest wait before subscribing again
_OPEN_TIMEOUT = 60.0  #: seconds a new stream has to become current (its whole first result)
_NO_CHANGE = int(TargetChange.TargetChangeType.NO_CHANGE)
_CURRENT = int(TargetChange.TargetChangeType.CURRENT)
_REMOVE = int(TargetChange.TargetChangeType.REMOVE)

#: a document as found: its path in the database, its data, its update time
Found = tuple[str, dict[str, Any], datetime]


class CollectionListener:
    """``run()`` until cancelled: every new or changed document of ``collection`` handed
    to ``found``; the stream opened again whenever it breaks (counted, logged), after
    1, 2, 4 … 30 s (1 s again after a stream that lasted a minute)."""

    def __init__(
        self,
        client: Callable[[], firestore.AsyncClient],
        collection: str,
        found: Callable[[Found], None],
        state: Callable[[str], None] = lambda _: None,
        open_timeout: float = _OPEN_TIMEOUT,
    ) -> None:
        """``found``: called with each new version of a document; ``state``: with
        ``connecting``, ``live`` (the stream is current) or ``broken`` (it will be opened
        again) as the stream goes through them."""
        self.client = client  #: a new client (and channel) for each subscription
        self.collection = collection
        self.found = found
        self.state = state
        self.open_timeout = open_timeout
        self._live = False
        self._opening: asyncio.Timeout | None = None  #: the deadline to become current
        self._versions: dict[str, tuple[int, int]] = {}  #: document name → update time
        self._token: bytes | None = None  #: where a new stream resumes

    async def run(self) -> None:
        delay = 1.0
        while True:
            self._live = False
            self.state("connecting")
            began = time.monotonic()
            try:
                await self._stream()
                reason = "the server ended it"
            except TimeoutError:
                reason = f"not current within {self.open_timeout:g} s"
            except (google_errors.GoogleAPIError, OSError, _Removed) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
            self.state("broken")
            if time.monotonic() - began > _STEADY:
                delay = 1.0
            log.warning("firestore listener on %s broke (%s); subscribing again in %.0f s",
                        self.collection, reason, delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def _stream(self) -> None:
        """One stream, until it breaks; TimeoutError if it is not current in time (the
        emulator has been seen to accept a stream and never answer it)."""
        client = self.client()
        try:
            async with asyncio.timeout(self.open_timeout) as self._opening:
                stream = await client._firestore_api.listen(
                    requests=self._requests(client), metadata=client._rpc_metadata
                )
                async for response in stream:
                    self._handle(ListenResponse.pb(response), client)
        finally:
            await client._firestore_api.transport.close()  # the grpc.aio channel

    async def _requests(self, client: firestore.AsyncClient) -> AsyncIterator[ListenRequest]:
        """The one request that adds our target; then the stream stays open."""
        collection = client.collection(self.collection)
        parent, _ = collection._parent_info()
        everything = StructuredQuery(
            from_=[StructuredQuery.CollectionSelector(collection_id=collection.id)]
        )
        target = Target(
            query=Target.QueryTarget(parent=parent, structured_query=everything),
            target_id=TARGET_ID,
        )
        if self._token:
            target.resume_token = self._token
        yield ListenRequest(database=client._database_string, add_target=target)
        await asyncio.Event().wait()  # until the stream is closed

    def _handle(self, pb: Any, client: firestore.AsyncClient) -> None:
        which = pb.WhichOneof("response_type")
        if which == "document_change":
            change = pb.document_change
            if TARGET_ID in change.target_ids:
                self._changed(change.document, client)
            elif TARGET_ID in change.removed_target_ids:
                self._versions.pop(change.document.name, None)
        elif which == "document_delete":
            self._versions.pop(pb.document_delete.document, None)
        elif which == "document_remove":
            self._versions.pop(pb.document_remove.document, None)
        elif which == "target_change":
            self._target_change(pb.target_change)

    def _changed(self, document: Any, client: firestore.AsyncClient) -> None:
        stamp = document.update_time
        version = (stamp.seconds, stamp.nanos)
        if self._versions.get(document.name) == version:
            return  # sent again unchanged (a reset, a resumed stream)
        self._versions[document.name] = version
        path = document.name.split("/documents/", 1)[1]
        data = _helpers.decode_dict(document.fields, client)
        updated: datetime = DatetimeWithNanoseconds.from_timestamp_pb(stamp)  # type: ignore[no-untyped-call]
        self.found((path, data if isinstance(data, dict) else {}, updated))

    def _target_change(self, change: Any) -> None:
        kind = change.target_change_type
        if kind == _REMOVE:
            raise _Removed(change.cause.message or f"code {change.cause.code}")
        if kind in (_CURRENT, _NO_CHANGE) and not self._live:
            self._live = True
            if self._opening is not None:
                self._opening.reschedule(None)  # current: it may now stay quiet for long
            self.state("live")
        if kind == _NO_CHANGE and not change.target_ids and change.resume_token:
            self._token = bytes(change.resume_token)


class _Removed(Exception):
    """The server removed our target (with the reason)."""
