"""What the HTTP layer may use, handed over by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from mailgate.clock import Clock
from mailgate.inbox import Inbox
from mailgate.ingest import Submissions
from mailgate.store import QueueStore

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    """What the HTTP layer may use; built by the composition root."""

    submissions: Submissions
    queue: QueueStore
    inbox: Inbox
    clock: Clock
    api_token: SecretStr | None
    mode: str  #: "dev" or "serve"
