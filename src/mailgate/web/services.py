"""What the HTTP layer may use, handed over by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from mailgate.inbox import Inbox
from mailgate.services import AccountsService
from mailgate.services.messages import MessagesService
from mailgate.services.webhooks import WebhooksService
from mailgate.store import TokenStore

__all__ = ["Services"]


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
