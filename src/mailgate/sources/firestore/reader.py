"""The reads a ``mail`` document needs before it is a message: its users and templates.

:class:`DocumentReader` fetches what :func:`.contracts.to_message` needs — the users
named by ``toUids``/``ccUids``/``bccUids`` (one batched read, only their ``email``, as
the extension does) and the templates collection — then builds the message in a worker
thread (a template's first compile can take a second). The templates collection is
read whole and kept ``cache_seconds``; a document naming a template the cache lacks
reads it again at once, so a template written just before the mail is found (the
extension falls back to a query the same way).

Errors keep their meaning where they cross in: Firestore refusing or failing a read
is :class:`FirestoreUnavailable` (the document is left alone and tried again later);
what is wrong with the document itself is :class:`.contracts.InvalidDocument`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from google.api_core import exceptions as google_errors
from google.api_core.retry import AsyncRetry, if_transient_error
from google.cloud import firestore

from mailgate.errors import ConfigError, MailgateError
from mailgate.sources.firestore.contracts import (
    Contract,
    ContractOptions,
    is_document_id,
    template_names,
    to_message,
    uids_of,
)

__all__ = ["DocumentReader", "FirestoreUnavailable"]

_BATCH = 300  #: document references per BatchGetDocuments request
_ERRORS = (google_errors.GoogleAPIError, OSError, TimeoutError)


class FirestoreUnavailable(MailgateError):
    """Firestore could not be read now (unreachable, timed out, refused): nothing is
    wrong with the document, which is left as it is and read again later."""


class DocumentReader:
    """Users and templates for a document, and the message it stands for."""

    def __init__(
        self,
        client: firestore.AsyncClient,
        options: ContractOptions,
        *,
        cache_seconds: float = 10.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout``: seconds one read may take, retries of transient errors included."""
        self.client = client
        self.options = options
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.clock = clock
        self._retry = AsyncRetry(
            predicate=if_transient_error, initial=0.1, maximum=2.0, timeout=timeout
        )
        try:
            self._users = client.collection(options.users_collection)
            self._templates = (
                client.collection(options.templates_collection)
                if options.templates_collection
                else None
            )
        except ValueError as exc:  # a path with an even number of segments
            raise ConfigError(f"firestore: {exc}") from None
        self._cache: tuple[float, dict[str, dict[str, Any]]] | None = None  #: (read at, docs)
        self._reads = 0  #: reads of the templates collection finished so far
        self._lock = asyncio.Lock()

    async def message(
        self, doc: Mapping[str, Any], contract: Contract, path: str
    ) -> dict[str, Any]:
        """The message JSON of ``doc`` (without ``id``): :func:`.contracts.to_message` after
        the reads it needs. :class:`InvalidDocument` or :class:`FirestoreUnavailable`."""
        users: dict[str, dict[str, Any]] = {}
        templates: dict[str, dict[str, Any]] = {}
        if contract is Contract.EXTENSION:
            users = await self.users(uids_of(doc))
            templates = await self.templates(doc)
        return await asyncio.to_thread(
            to_message,
            doc,
            contract,
            path=path,
            options=self.options,
            users=users,
            templates=templates,
        )

    async def users(self, uids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """uid → user document (its ``email`` field only) for the uids that exist; ids
        that cannot name a document are left out."""
        wanted = sorted({u for u in uids if is_document_id(u)})
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _BATCH):
            refs = [self._users.document(uid) for uid in wanted[start : start + _BATCH]]
            try:
                async for snap in self.client.get_all(
                    refs, field_paths=["email"], retry=self._retry, timeout=self.timeout
                ):
                    if snap.exists:
                        found[snap.id] = snap.to_dict() or {}
            except _ERRORS as exc:
                raise FirestoreUnavailable(_reason(self.options.users_collection, exc)) from exc
        return found

    async def templates(self, doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """name → template document, every one in the collection (partials included)
        when ``doc`` names a template; ``{}`` when it names none or no templates
        collection is configured."""
        names = template_names(doc)
        if not names or self._templates is None:
            return {}
        found = await self._all_templates(fresh=False)
        if not names <= found.keys():  # written since the cache was filled, or missing
            found = await self._all_templates(fresh=True)
        return found

    async def _all_templates(self, *, fresh: bool) -> dict[str, dict[str, Any]]:
        """The collection, read at most once at a time: callers that waited for a read
        begun after they asked share its result."""
        reads = self._reads
        async with self._lock:
            cached = self._cache
            if cached is not None and (
                self._reads > reads or (not fresh and self.clock() - cached[0] < self.cache_seconds)
            ):
                return cached[1]
            read_at = self.clock()
            docs = await self._read_templates()
            self._cache, self._reads = (read_at, docs), self._reads + 1
            return docs

    async def _read_templates(self) -> dict[str, dict[str, Any]]:
        assert self._templates is not None
        try:
            return {
                snap.id: snap.to_dict() or {}
                async for snap in self._templates.stream(retry=self._retry, timeout=self.timeout)
            }
        except _ERRORS as exc:
            raise FirestoreUnavailable(_reason(self._templates.id, exc)) from exc


def _reason(collection: str, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return f"reading {collection!r}: {text[:300]}"
