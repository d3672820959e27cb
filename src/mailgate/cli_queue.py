"""``mailgate queue list|show|retry|cancel``: the queue, from the command line.

Works on the database directly through :class:`MessagesService` (no server needed),
and prints the same view the API returns. A running ``serve`` picks up a retried
message at its next poll.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mailgate.app import Mode, database_url
from mailgate.cli_accounts import where_options
from mailgate.clock import SystemClock
from mailgate.errors import Conflict, NotFound
from mailgate.model import State
from mailgate.services.messages import MessagesService, message_view
from mailgate.settings import Settings
from mailgate.store import Database, MessageRecord, QueueStore

__all__ = ["add_commands"]

SettingsOf = Callable[[argparse.Namespace], Settings]
Command = Callable[[MessagesService, argparse.Namespace], Awaitable[int]]


def add_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``queue`` on the ``mailgate`` parser."""
    queue = sub.add_parser("queue", help="list, show, retry or cancel queued messages")
    actions = queue.add_subparsers(title="queue commands", required=True, metavar="COMMAND")
    listing = actions.add_parser("list", help="newest first: id, state, to, subject, why")
    listing.add_argument("--state", choices=[s.value for s in State])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(command=_list)
    for name, command, help_text in (
        ("show", _show, "one message and every attempt, as JSON"),
        ("retry", _retry, "deferred or failed → queued now"),
        ("cancel", _cancel, "withdraw a message that has not been sent"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("id")
        action.set_defaults(command=command)
    for action in actions.choices.values():
        where_options(action)
    queue.set_defaults(func=_runner(settings_of))


def _runner(settings_of: SettingsOf) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_with_service(settings_of(args), args))
        except (NotFound, Conflict) as exc:
            print(f"mailgate: error: {exc}", file=sys.stderr)
            return 1

    return run


async def _with_service(settings: Settings, args: argparse.Namespace) -> int:
    async with _service(settings, Mode(args.mode)) as service:
        command: Command = args.command
        return await command(service, args)


@asynccontextmanager
async def _service(settings: Settings, mode: Mode) -> AsyncIterator[MessagesService]:
    db = Database(database_url(settings, mode))
    try:
        await db.migrate()
        yield MessagesService(QueueStore(db), SystemClock(), submissions=None)
    finally:
        await db.aclose()


async def _list(service: MessagesService, args: argparse.Namespace) -> int:
    state = State(args.state) if args.state else None
    records, _ = await service.list(args.tenant, state=state, limit=args.limit)
    print(f"{'ID':36}  {'STATE':9}  {'CREATED (UTC)':19}  {'TO':30}  SUBJECT (WHY)")
    for r in records:
        print(_row(r))
    return 0


def _row(r: MessageRecord) -> str:
    why = r.wait_reason or (r.last_error if r.state is not State.SENT else None)
    to = ", ".join(r.to)
    created = r.created_at.strftime("%Y-%m-%d %H:%M:%S")
    line = f"{r.id:36}  {r.state.value:9}  {created:19}  {to[:30]:30}  {r.subject}"
    return f"{line}  ({why})" if why else line


async def _show(service: MessagesService, args: argparse.Namespace) -> int:
    return _print(await service.get(args.id, args.tenant))


async def _retry(service: MessagesService, args: argparse.Namespace) -> int:
    return _print(await service.retry(args.id, args.tenant))


async def _cancel(service: MessagesService, args: argparse.Namespace) -> int:
    return _print(await service.cancel(args.id, args.tenant))


def _print(record: MessageRecord) -> int:
    print(json.dumps(message_view(record), indent=2, ensure_ascii=False))
    return 0
