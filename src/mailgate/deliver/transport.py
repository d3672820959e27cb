"""The transport interface: hand over one message, get a :class:`SendResult` back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailgate.model import SendResult

__all__ = ["Envelope", "Transport"]


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  #: bare MAIL FROM address
    recipients: tuple[str, ...]  #: bare RCPT TO addresses
    message_id: str  #: mailgate's id, for logs and captures
    tenant: str = "default"


class Transport(Protocol):
    """Delivers bytes. Failures are returned as values; exceptions mean bugs."""

    name: str

    async def send(self, envelope: Envelope, content: bytes) -> SendResult: ...

    async def aclose(self) -> None: ...
