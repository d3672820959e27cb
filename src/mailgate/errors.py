"""Exceptions raised by mailgate.

Outcomes of delivery (a 550, a timeout) are *values* (:class:`mailgate.model.SendResult`),
not exceptions. Exceptions mean bad input, bad configuration, or a bug::

    MailgateError
    ├── ConfigError            settings that cannot work together (refuse to start)
    ├── InvalidMessage         a submitted message that fails validation (HTTP 422 item)
    ├── NotFound               no such message / captured message for this tenant
    └── Conflict               the operation does not apply in the current state
"""

from __future__ import annotations

__all__ = ["ConfigError", "Conflict", "InvalidMessage", "MailgateError", "NotFound"]


class MailgateError(Exception):
    """Base class of every error mailgate raises on purpose."""


class ConfigError(MailgateError):
    """Settings are invalid or unsafe together; the process must not start."""


class InvalidMessage(MailgateError):
    """A submitted message is invalid; ``str(exc)`` is the reason shown to the client."""


class NotFound(MailgateError):
    """The addressed object does not exist (or belongs to another tenant)."""


class Conflict(MailgateError):
    """The request is valid but not in the object's current state (HTTP 409)."""
