"""WebhooksService: the one way the web API and the CLI manage webhook endpoints.

Its rules: a URL is absolute http(s) and must pass the same address check as URL
attachments (public addresses only unless allowed; checked again at every POST, since
DNS may change); a secret is at least 16 characters, or one is generated
(``whsec_…``) and shown once, in the answer that created it; the secret is never
shown again. Replaying an event sends it again to the tenant's enabled endpoints that
take its kind (or to the one named).
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from mailgate.clock import Clock
from mailgate.deliver.fetch import check_url
from mailgate.deliver.ssrf import AddressRefused, NetGuard, UnresolvableHost
from mailgate.errors import InvalidInput, NotFound
from mailgate.store.outbox import EventKind, OutboxStore
from mailgate.store.webhooks import Backlog, Webhook, WebhookAttempt, WebhookStore, consumer_name

__all__ = [
    "Created",
    "WebhookIn",
    "WebhookPatch",
    "WebhooksService",
    "shown_url",
    "webhook_view",
]

_MIN_SECRET = 16
_MASK = b"***"  #: what a URL's password shows as


def _url(value: str) -> str:
    try:
        check_url(value)
    except ValueError as exc:
        raise ValueError(f"url: {exc}") from None
    return value


#: what JSON Schema can say of a URL; check_url (and the address check) judge the rest
_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://"


class WebhookIn(BaseModel):
    """A new endpoint."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048, pattern=_URL_PATTERN, description="http(s) URL the events are POSTed to"
    )
    kinds: list[EventKind] | None = Field(
        None, min_length=1, description="the event kinds it takes; left out: every kind"
    )
    description: str = Field("", max_length=500)
    secret: SecretStr | None = Field(
        None,
        min_length=_MIN_SECRET,
        max_length=200,
        description="signing secret (write-only, at least 16 characters); left out: one is"
        " generated and returned once, in this answer",
    )
    enabled: bool = True

    _check_url = field_validator("url")(_url)


class WebhookPatch(BaseModel):
    """Changes to an endpoint; what is left out stays."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2048, pattern=_URL_PATTERN)
    kinds: list[EventKind] | None = Field(None, min_length=1)
    all_kinds: bool = Field(False, description="take every kind again (kinds: null)")
    description: str | None = Field(None, max_length=500)
    secret: SecretStr | None = Field(None, min_length=_MIN_SECRET, max_length=200)
    enabled: bool | None = None

    _check_url = field_validator("url")(lambda v: v if v is None else _url(v))


@dataclass(frozen=True, slots=True)
class Created:
    webhook: Webhook
    secret: str | None  #: the generated secret, shown once; None when the client gave one


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    """An endpoint as answers show it: never its secret, nor a password in its URL."""
    return {
        "id": webhook.id,
        "url": shown_url(webhook.url),
        "kinds": None if webhook.kinds is None else list(webhook.kinds),
        "description": webhook.description,
        "enabled": webhook.enabled,
        "disabled_reason": webhook.disabled_reason,
        "created_at": _iso(webhook.created_at),
        "updated_at": _iso(webhook.updated_at),
    }


def shown_url(url: str) -> str:
    """``url`` with the password of its userinfo (``https://user:pw@host/``) masked."""
    import httpx  # here, not at the top: the composition root imports this module

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return url
    if not parsed.password:
        return url
    user = parsed.userinfo.partition(b":")[0]
    return str(parsed.copy_with(userinfo=user + b":" + _MASK))


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


class WebhooksService:
    """``on_change()`` runs after any change (the sender reads the endpoints again)."""

    def __init__(
        self,
        store: WebhookStore,
        outbox: OutboxStore,
        clock: Clock,
        *,
        guard: NetGuard,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.guard = guard
        self.on_change = on_change

    async def create(self, tenant: str, spec: WebhookIn) -> Created:
        await self._reachable(spec.url)
        generated = None
        if spec.secret is None:
            generated = "whsec_" + secrets.token_urlsafe(32)
        secret = generated or (spec.secret.get_secret_value() if spec.secret else "")
        webhook = await self.store.create(
            tenant,
            url=spec.url,
            kinds=None if spec.kinds is None else [k.value for k in spec.kinds],
            description=spec.description,
            secret=secret,
            enabled=spec.enabled,
            now=self.clock.now(),
        )
        self._changed()
        return Created(webhook, generated)

    async def list(self, tenant: str) -> builtins.list[Webhook]:
        return await self.store.list(tenant)

    async def get(self, tenant: str, webhook_id: str) -> Webhook:
        return await self.store.get(tenant, webhook_id)

    async def update(self, tenant: str, webhook_id: str, patch: WebhookPatch) -> Webhook:
        changes: dict[str, Any] = {}
        if patch.url is not None:
            await self._reachable(patch.url)
            changes["url"] = patch.url
        if patch.all_kinds:
            changes["kinds"] = None
        elif patch.kinds is not None:
            changes["kinds"] = [k.value for k in patch.kinds]
        if patch.description is not None:
            changes["description"] = patch.description
        if patch.secret is not None:
            changes["secret"] = patch.secret.get_secret_value()
        if patch.enabled is not None:
            changes["enabled"] = patch.enabled
        webhook = await self.store.update(tenant, webhook_id, changes, self.clock.now())
        self._changed()
        return webhook

    async def delete(self, tenant: str, webhook_id: str) -> None:
        await self.store.delete(tenant, webhook_id)
        self._changed()

    async def attempts(
        self, tenant: str, webhook_id: str, *, limit: int, before: int | None
    ) -> tuple[builtins.list[WebhookAttempt], Backlog]:
        """The endpoint's attempts (newest first) and what it still has to take."""
        attempts = await self.store.attempts(tenant, webhook_id, limit=limit, before=before)
        return attempts, await self.store.backlog(webhook_id)

    async def replay(
        self, tenant: str, event_id: int, webhook_id: str | None = None
    ) -> builtins.list[str]:
        """Send event ``event_id`` again to ``webhook_id``, or to every enabled endpoint of
        the tenant that takes its kind; the endpoints it was queued for."""
        event = await self.outbox.event(event_id)
        if event is None or event.tenant != tenant:
            raise NotFound(f"no event {event_id} (retention may have removed it)")
        if webhook_id is not None:
            targets = [await self.store.get(tenant, webhook_id)]
        else:
            targets = [
                w
                for w in await self.store.list(tenant)
                if w.enabled and (w.kinds is None or event.kind in w.kinds)
            ]
        now = self.clock.now()
        for webhook in targets:
            await self.outbox.replay(consumer_name(webhook.id), event_id, now)
        self._changed()
        return [w.id for w in targets]

    async def _reachable(self, url: str) -> None:
        """The attachment rule: the host must resolve, and only to allowed addresses."""
        parsed = check_url(url)
        try:
            await self.guard.resolve(parsed.host, parsed.port or _PORTS[parsed.scheme])
        except (AddressRefused, UnresolvableHost) as exc:
            raise InvalidInput(f"url: {exc}") from None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


_PORTS = {"http": 80, "https": 443}
