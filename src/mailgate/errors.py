"""Exceptions raised by mailgate.

Outcomes of delivery (a 550, a timeout) are *values* (:class:`mailgate.model.SendResult`),
not exceptions. Exceptions mean bad input, bad configuration, broken
infrastructure, or a bug::

    MailgateError
    ├── ConfigError            settings that cannot work together (refuse to start)
    ├── InvalidMessage         a submitted message that fails validation (HTTP 422 item)
    ├── InvalidInput           a request naming something that cannot work (HTTP 422)
    ├── InvalidDocument        a Firestore mail document that cannot be sent (ERROR on it;
    │                          sources.firestore.contracts)
    ├── FirestoreUnavailable   Firestore failed a read: try again later
    │                          (sources.firestore.reader)
    ├── NotFound               no such message / captured message for this tenant
    ├── Conflict               the operation does not apply in the current state
    ├── UnbuildableMessage     a queued message whose MIME cannot be built (fails for good)
    └── StoreError             the database refused an operation (a constraint, bad SQL: a bug)
        └── StoreUnavailable   the database cannot be reached or is busy: try again later
            └── CommitOutcomeUnknown  the connection broke at COMMIT: maybe written

The store translates SQLAlchemy's exceptions into ``StoreError`` where they leave
:class:`mailgate.store.Database` (``raise StoreUnavailable(...) from exc``, as httpx
maps httpcore's), so nothing above the store imports or catches SQLAlchemy types;
the original stays on ``__cause__`` for the log.
"""

from __future__ import annotations

__all__ = [
    "CommitOutcomeUnknown",
    "ConfigError",
    "Conflict",
    "InvalidInput",
    "InvalidMessage",
    "MailgateError",
    "NotFound",
    "StoreError",
    "StoreUnavailable",
    "UnbuildableMessage",
]


class MailgateError(Exception):
    """Base class of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """Settings are invalid or unsafe together; the process must not start."""


class InvalidMessage(MailgateError):
    """A submitted message is invalid; ``str(exc)`` is the reason shown to the client."""


class InvalidInput(MailgateError):
    """A request names something that cannot work (HTTP 422); ``str(exc)`` says why."""


class NotFound(MailgateError):
    """The addressed object does not exist (or belongs to another tenant)."""


class Conflict(MailgateError):
    """The request is valid but not in the object's current state (HTTP 409)."""


class StoreError(MailgateError):
    """The database failed an operation; nothing of it was committed (unless a commit
    itself failed, when the outcome is unknown)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, dropped the connection, or stayed locked: the
    operation may succeed if retried later (SMTP ``451``, HTTP ``503``)."""


class CommitOutcomeUnknown(StoreUnavailable):
    """A write's statements ran but its commit failed: it may be durable or not, so
    writing it again could write it twice (a group commit's writers get this)."""


class UnbuildableMessage(MailgateError):
    """Building a queued message's MIME failed; it would fail the same way on every retry,
    so the dispatcher fails the message with ``str(exc)`` as the reason."""
