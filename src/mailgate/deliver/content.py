"""What a message needs at send time beyond the queue: attachment bytes and a DKIM signer.

:class:`SendTimeContent` is the dispatcher's ``prepare`` hook
(:data:`mailgate.deliver.transport.Prepare`): each :class:`Outgoing` calls it once per
attempt, before MIME is built or a provider reads the attachments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from mailgate.deliver.attachments import AttachmentResolver
from mailgate.deliver.dkim import signer_for
from mailgate.deliver.fetch import UrlFetcher
from mailgate.deliver.router import Routes
from mailgate.deliver.ssrf import NetGuard, Resolver, system_resolver
from mailgate.deliver.transport import Prepared
from mailgate.model import Account, Message
from mailgate.settings import AttachmentSettings

if TYPE_CHECKING:
    import httpx

__all__ = ["AccountLookup", "SendTimeContent", "sending_account"]

#: The account a message is sent through (its DKIM settings), or None.
AccountLookup = Callable[[Message], Awaitable[Account | None]]


def sending_account(routes: Routes) -> AccountLookup:
    """The account of the message's route: the router caches its lookups, so this costs
    no query per message, and it names the same account the transport sends through."""

    async def lookup(message: Message) -> Account | None:
        return (await routes.route(message)).account

    return lookup


class SendTimeContent:
    """``prepare`` for the dispatcher: resolves url/path attachments, picks the signer."""

    def __init__(
        self,
        settings: AttachmentSettings,
        *,
        accounts: AccountLookup | None = None,
        resolver: Resolver = system_resolver,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``resolver`` and ``http_transport`` are for tests; ``accounts`` enables DKIM."""
        guard = NetGuard(settings.allow_private_networks, tuple(settings.allowed_hosts), resolver)
        self.fetcher = UrlFetcher(guard, timeout=settings.fetch_timeout, transport=http_transport)
        self.attachments = AttachmentResolver(settings, self.fetcher)
        self.accounts = accounts

    async def __call__(self, message: Message) -> Prepared:
        resolved = await self.attachments.resolve(message)
        account = await self.accounts(message) if self.accounts is not None else None
        return Prepared(resolved, signer_for(account) if account is not None else None)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def __aenter__(self) -> SendTimeContent:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
