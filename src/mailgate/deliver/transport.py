"""The transport interface: hand over one :class:`Outgoing` message, get a SendResult back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.errors import UnbuildableMessage
from mailgate.model import Message, SendResult

__all__ = ["Envelope", "Outgoing", "Prepare", "Prepared", "Sign", "Transport"]

#: Adds a signature header (DKIM) to the built bytes; runs in the build thread.
Sign = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Prepared:
    """The message as it is sent: ``url``/``path`` attachments carry their bytes."""

    message: Message
    sign: Sign | None = None  #: the account's DKIM signer, if it signs


#: Resolves a message's send-time content (``deliver.content.SendTimeContent``). May raise
#: :class:`UnbuildableMessage` (a subclass says whether a retry may help).
Prepare = Callable[[Message], Awaitable[Prepared]]


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
    pays for building (or re-parsing) MIME. The bytes are built once and kept for a
    retry within the same attempt: in the event loop when the message is small (tens
    of microseconds), else in a worker thread (CPU work proportional to the message,
    or a DKIM signature, must not stall the event loop).
    """

    message: Message
    envelope: Envelope
    build: Callable[[Message], bytes]
    prepare: Prepare | None = None
    _mime: bytes | None = field(default=None, repr=False)
    _prepared: Prepared | None = field(default=None, repr=False)

    async def content(self) -> Prepared:
        """The message with its ``url``/``path`` attachments resolved (once per attempt).

        A provider's HTTP API takes its attachments from here; ``mime()`` builds from it.
        """
        if self._prepared is None:
            if self.prepare is not None:
                self._prepared = await self.prepare(self.message)
            elif any(a.deferred for a in self.message.attachments):
                raise UnbuildableMessage("attachments by url or path need a send-time resolver")
            else:
                self._prepared = Prepared(self.message)
        return self._prepared

    async def mime(self) -> bytes:
        """The RFC 5322 bytes; :class:`UnbuildableMessage` if they cannot be built.

        Transports let that exception through: the dispatcher fails the message with it.
        """
        if self._mime is None:
            prepared = await self.content()
            try:
                if prepared.sign is None and _size(prepared.message) <= INLINE_BUILD_MAX:
                    self._mime = self._build(prepared)  # cheaper than a thread's round trip
                else:
                    self._mime = await asyncio.to_thread(self._build, prepared)
            except Exception as exc:  # the email package raises more than ValueError
                reason = f"could not build the message: {type(exc).__name__}: {exc}"
                raise UnbuildableMessage(reason) from exc
        return self._mime

    def _build(self, prepared: Prepared) -> bytes:
        raw = self.build(prepared.message)
        return raw if prepared.sign is None else prepared.sign(raw)


#: characters and bytes to encode up to which a message is built in the event loop
INLINE_BUILD_MAX = 64 * 1024


def _size(message: Message) -> int:
    """Roughly what building costs: every text and byte that is encoded."""
    return (
        len(message.text or "")
        + len(message.html or "")
        + sum(len(a.content) for a in message.attachments)
        + len(message.subject)
        + sum(len(k) + len(v) for k, v in message.headers.items())
        + sum(map(len, (*message.to, *message.cc, message.sender)))
    )


class Transport(Protocol):
    """Delivers messages. Failures are returned as values; exceptions mean bugs."""

    name: str

    async def send(self, outgoing: Outgoing) -> SendResult: ...

    async def aclose(self) -> None: ...
