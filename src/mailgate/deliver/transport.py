"""The transport interface: hand over one :class:`Outgoing` message, get a SendResult back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.errors import UnbuildableMessage
from mailgate.model import Message, SendResult

__all__ = ["Envelope", "Outgoing", "Transport"]


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  #: bare MAIL FROM address
    recipients: tuple[str, ...]  #: bare RCPT TO addresses
    message_id: str  #: mailgate's id, for logs and captures
    tenant: str = "default"


@dataclass(slots=True)
class Outgoing:
    """One message on its way out: the fields, the envelope, and its MIME built on demand.

    An SMTP transport needs the bytes; a provider's HTTP API takes the fields and never
    pays for building (or re-parsing) MIME. The bytes are built once, in a worker
    thread (CPU work proportional to the message must not stall the event loop), and
    kept for a retry within the same attempt.
    """

    message: Message
    envelope: Envelope
    build: Callable[[Message], bytes]
    _mime: bytes | None = field(default=None, repr=False)

    async def mime(self) -> bytes:
        """The RFC 5322 bytes; :class:`UnbuildableMessage` if they cannot be built.

        Transports let that exception through: the dispatcher fails the message with it.
        """
        if self._mime is None:
            try:
                self._mime = await asyncio.to_thread(self.build, self.message)
            except Exception as exc:  # the email package raises more than ValueError
                reason = f"could not build the message: {type(exc).__name__}: {exc}"
                raise UnbuildableMessage(reason) from exc
        return self._mime


class Transport(Protocol):
    """Delivers messages. Failures are returned as values; exceptions mean bugs."""

    name: str

    async def send(self, outgoing: Outgoing) -> SendResult: ...

    async def aclose(self) -> None: ...
