"""``mailgate smtp-users add|list|remove``: who may submit mail over SMTP, without a
server.

These open the database ``mailgate serve`` would open and go through
:class:`~mailgate.services.smtp_users.SmtpUsersService`, as the web API does. A password
never comes from argv (other users could read it in the process list): it is read from
stdin with ``--password-stdin``, or generated and printed once.
"""

from __future__ import annotations

import argparse
import secrets
import string
import sys
from typing import Any

from pydantic import SecretStr, ValidationError

from mailgate.app import Mode, database_url
from mailgate.cli_service import SettingsOf, command_group, invalid
from mailgate.clock import SystemClock
from mailgate.services.smtp_users import SmtpUserIn, SmtpUsersService
from mailgate.settings import Settings
from mailgate.store import Database
from mailgate.store.smtp_users import SmtpUserStore

__all__ = ["add_commands"]


def add_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``smtp-users`` on the ``mailgate`` parser."""
    action = command_group(
        sub, "smtp-users", "SMTP submission users (works without a server)", settings_of, _command
    )
    add = action("add", "add a user; a generated password is printed once")
    add.add_argument("username", help="what the client gives to SMTP AUTH")
    add.add_argument(
        "--sender",
        dest="senders",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an address or @domain it may send as (repeatable; default: any)",
    )
    add.add_argument("--account", default="default", help="the account its mail goes through")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (8+ characters) from stdin instead of generating one",
    )
    action("list", "the tenant's SMTP users (never their passwords)")
    action("remove", "delete a user").add_argument("username")


async def _command(settings: Settings, args: argparse.Namespace) -> int:
    db = Database(database_url(settings, Mode(args.mode)))
    try:
        await db.migrate()
        service = SmtpUsersService(SmtpUserStore(db), SystemClock())
        command = {"add": _add, "list": _list, "remove": _remove}[args.action]
        return await command(service, args)
    finally:
        await db.aclose()


async def _add(service: SmtpUsersService, args: argparse.Namespace) -> int:
    generated = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = generated = _new_password()
    fields = {
        "username": args.username,
        "password": SecretStr(password),
        "senders": args.senders,
        "account": args.account,
    }
    try:
        spec = SmtpUserIn.model_validate(fields)
    except ValidationError as exc:
        return invalid(exc)
    user = await service.create(args.tenant, spec)
    if generated is not None:
        print(generated)
        print("the password above is shown this once: keep it now", file=sys.stderr)
    senders = ", ".join(user.senders) or "any sender"
    print(
        f"added SMTP user {user.username} of tenant {user.tenant}"
        f" (account {user.account}; {senders})",
        file=sys.stderr,
    )
    return 0


def _new_password() -> str:
    """24 letters and digits (~143 bits): nothing a shell or a client's option parser
    reads as special (a token_urlsafe password may start with "-")."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


_ALPHABET = string.ascii_letters + string.digits


async def _list(service: SmtpUsersService, args: argparse.Namespace) -> int:
    rows = [("USERNAME", "ACCOUNT", "SENDERS")]
    for u in await service.list(args.tenant):
        rows.append((u.username, u.account, ",".join(u.senders) or "any"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        print(*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[2])
    return 0


async def _remove(service: SmtpUsersService, args: argparse.Namespace) -> int:
    await service.delete(args.tenant, args.username)
    print(f"removed SMTP user {args.username} of tenant {args.tenant}")
    return 0
