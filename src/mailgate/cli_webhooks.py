"""``mailgate webhooks add|list|remove``: a tenant's webhook endpoints, without a server.

These open the database ``mailgate serve`` (or, with ``--mode dev``, ``mailgate dev``)
would open and go through :class:`~mailgate.services.webhooks.WebhooksService`, the
rules the web API applies (URL and address checks, the write-only secret). A running
gateway picks up the change within seconds. A secret never comes from argv: it is
read from stdin with ``--secret-stdin``, or generated and printed once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import SecretStr, ValidationError

from mailgate.app import Mode, database_url, secret_box, webhook_guard
from mailgate.cli_service import SettingsOf, command_group, invalid
from mailgate.clock import SystemClock
from mailgate.services.webhooks import WebhookIn, WebhooksService, shown_url
from mailgate.settings import Settings
from mailgate.store import Database
from mailgate.store.outbox import EventKind, OutboxStore
from mailgate.store.webhooks import WebhookStore

__all__ = ["add_commands"]


def add_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``webhooks`` on the ``mailgate`` parser."""
    action = command_group(
        sub, "webhooks", "webhook endpoints (works without a server)", settings_of, _command
    )
    add = action("add", "add an endpoint; its generated signing secret is printed once")
    add.add_argument("url", help="http(s) URL the events are POSTed to")
    add.add_argument(
        "--kind",
        dest="kinds",
        action="append",
        choices=[k.value for k in EventKind],
        metavar="KIND",
        help="an event kind it takes (repeatable; default: every kind): "
        + ", ".join(k.value for k in EventKind),
    )
    add.add_argument("--description", default="", help="what it is for")
    add.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the signing secret (16+ characters) from stdin instead of generating one",
    )
    add.add_argument("--disabled", action="store_true", help="add it switched off")
    action("list", "the tenant's endpoints (never their secrets)")
    action("remove", "delete an endpoint and what it had pending").add_argument(
        "webhook", metavar="ID"
    )


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    mode = Mode(args.mode)
    db = Database(database_url(settings, mode))
    try:
        await db.migrate()
        service = WebhooksService(
            WebhookStore(db, secret_box(settings, mode)),
            OutboxStore(db),
            SystemClock(),
            guard=webhook_guard(settings, mode),
        )
        command = {"add": _add, "list": _list, "remove": _remove}[args.action]
        return await command(service, args)
    finally:
        await db.aclose()


async def _add(service: WebhooksService, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {
        "url": args.url,
        "kinds": args.kinds,
        "description": args.description,
        "enabled": not args.disabled,
    }
    if args.secret_stdin:
        fields["secret"] = SecretStr(sys.stdin.readline().rstrip("\r\n"))
    try:
        spec = WebhookIn.model_validate(fields)
    except ValidationError as exc:
        return invalid(exc)
    created = await service.create(args.tenant, spec)
    if created.secret is not None:
        print(created.secret)
        print("the signing secret above is shown this once: keep it now", file=sys.stderr)
    webhook = created.webhook
    kinds = ", ".join(webhook.kinds) if webhook.kinds else "every kind"
    print(f"added webhook {webhook.id} → {shown_url(webhook.url)} ({kinds})", file=sys.stderr)
    return 0


async def _list(service: WebhooksService, args: argparse.Namespace) -> int:
    rows = [("ID", "ENABLED", "KINDS", "URL")]
    for w in await service.list(args.tenant):
        enabled = "yes" if w.enabled else f"no ({w.disabled_reason or 'switched off'})"
        rows.append((w.id, enabled, ",".join(w.kinds) if w.kinds else "all", shown_url(w.url)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3])
    return 0


async def _remove(service: WebhooksService, args: argparse.Namespace) -> int:
    await service.delete(args.tenant, args.webhook)
    print(f"removed webhook {args.webhook} of tenant {args.tenant}")
    return 0
