"""What the HTTP layer may use, handed over by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from mailgate.inbox import Inbox
from mailgate.ingest.chaos import Chaos
from mailgate.services import AccountsService
from mailgate.services.messages import MessagesService
from mailgate.services.runtime import RuntimeSettings
from mailgate.services.smtp_users import SmtpUsersService
from mailgate.services.webhooks import WebhooksService
from mailgate.store import TokenStore

__all__ = ["PolledSource", "Services"]


class PolledSource(Protocol):
    """A source polled for messages (the Firestore collection): ``POST /api/v1/poll``,
    ``PATCH /api/v1/settings``, ``GET /api/v1/stats``."""

    poll_interval: float

    async def poll(self) -> Any: ...

    def stats_view(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Services:
    """What the HTTP layer may use; built by the composition root."""

    messages: MessagesService
    inbox: Inbox
    api_token: SecretStr | None
    mode: str  #: "dev" or "serve"
    accounts: AccountsService | None = None  #: None: no account directory (/accounts is 404)
    tokens: TokenStore | None = None  #: per-tenant API tokens; None: only the admin token
    webhooks: WebhooksService | None = None  #: None: /webhooks is 404
    firestore: PolledSource | None = None  #: the Firestore collection, when watched
    smtp_users: SmtpUsersService | None = None  #: SMTP submission users; None: 404
    chaos: Chaos | None = None  #: the capture server's chaos triggers; None: /chaos is 404
    runtime: RuntimeSettings | None = None  #: settings changed at run time (/settings)
    #: the admin UI's user and password: as HTTP Basic credentials, the admin's too
    admin: tuple[str, SecretStr] | None = None
