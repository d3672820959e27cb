"""``mailgate accounts|secrets|tokens``: manage the account directory without a server.

These commands open the database ``mailgate serve`` (or, with ``--mode dev``,
``mailgate dev``) would open and go through :class:`~mailgate.services.AccountsService`,
the same rules the web API applies. Secrets never come from argv (``ps`` shows it):
the password or token is read from stdin with ``--password-stdin`` (as ``docker
login`` does) or prompted for without echo on a terminal. Nothing here prints a
secret, except ``tokens add``, which shows the new token once.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mailgate.app import Mode, database_url, secret_box
from mailgate.clock import SystemClock
from mailgate.crypto import KEY_HOWTO, SecretBox, generate_key
from mailgate.deliver import parse_relay_url
from mailgate.errors import Conflict, NotFound
from mailgate.model import Account
from mailgate.services import AccountIn, AccountsService, ProbeSettings, account_view
from mailgate.settings import TENANT_RULE, Settings, valid_tenant
from mailgate.store import AccountStore, Database, TokenStore
from mailgate.store.webhooks import WebhookStore

__all__ = ["add_commands", "where_options"]

SettingsOf = Callable[[argparse.Namespace], Settings]


class UsageError(Exception):
    """A command line that cannot work (exit 2, like argparse's own errors)."""


@dataclass
class Context:
    """What one command works on: the service, the token store, the settings' key."""

    accounts: AccountsService
    tokens: TokenStore
    settings: Settings
    mode: Mode


def add_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``accounts``, ``secrets`` and ``tokens`` on the ``mailgate`` parser;
    ``settings_of(args)`` builds :class:`Settings` from ``--config``/``--db``."""
    _accounts_parser(sub, _runner(settings_of, _ACCOUNT_COMMANDS))
    _secrets_parser(sub, _runner(settings_of, _SECRET_COMMANDS))
    _tokens_parser(sub, _runner(settings_of, _TOKEN_COMMANDS))


def _runner(
    settings_of: SettingsOf, commands: dict[str, Callable[[Context, argparse.Namespace], Any]]
) -> Callable[[argparse.Namespace], int]:
    """``args.func``: open the database, run the named command, map errors to exit codes."""

    def run(args: argparse.Namespace) -> int:
        try:
            if args.action == "generate":  # needs no settings and no database
                print(generate_key())
                return 0
            settings = settings_of(args)
            result: int = asyncio.run(_with_context(settings, args, commands[args.action]))
            return result
        except UsageError as exc:
            return _fail(str(exc), 2)
        except (NotFound, Conflict) as exc:
            return _fail(str(exc), 1)

    return run


def _fail(message: str, code: int) -> int:
    print(f"mailgate: error: {message}", file=sys.stderr)
    return code


async def _with_context(
    settings: Settings,
    args: argparse.Namespace,
    command: Callable[[Context, argparse.Namespace], Awaitable[int]],
) -> int:
    async with _context(settings, Mode(args.mode)) as ctx:
        return await command(ctx, args)


@asynccontextmanager
async def _context(settings: Settings, mode: Mode) -> AsyncIterator[Context]:
    db = Database(database_url(settings, mode))
    try:
        await db.migrate()
        clock = SystemClock()
        store = AccountStore(db, secret_box(settings, mode), clock)
        service = AccountsService(
            store,
            clock,
            configured=_configured(settings, mode),
            probe_settings=ProbeSettings(
                timeout=settings.delivery.smtp_timeout,
                local_hostname=settings.smtp.hostname,
                postmark_url=settings.postmark.base_url,
            ),
        )
        yield Context(service, TokenStore(db, clock), settings, mode)
    finally:
        await db.aclose()


def _configured(settings: Settings, mode: Mode) -> list[Account]:
    """The relay as the read-only account ``default``, as ``serve`` lists it."""
    if mode is Mode.DEV or settings.relay_url is None:
        return []
    relay = parse_relay_url(settings.relay_url.get_secret_value())
    return [relay.account(pool_size=settings.delivery.pool_size)]


# --- accounts ---------------------------------------------------------------------------

#: ``AccountIn`` field → the flag that sets it (for one-line validation errors)
_FLAGS = {
    "id": "--id",
    "from": "--from",
    "transport": "--transport",
    "smtp_host": "--host",
    "smtp_port": "--port",
    "smtp_security": "--security",
    "smtp_auth": "--auth",
    "smtp_username": "--username",
}


async def _add(ctx: Context, args: argparse.Namespace) -> int:
    spec = _spec(args, _secret(args))
    account = await ctx.accounts.create(args.tenant, spec)
    print(
        f"added account {account.id} ({_where(account)}); outbound is off until "
        f"`mailgate accounts test {account.id}` passes and it is enabled"
    )
    return 0


def _spec(args: argparse.Namespace, secret: str | None) -> AccountIn:
    fields: dict[str, Any] = {
        "id": args.id,
        "from": args.from_ or None,
        "transport": args.transport,
        "smtp_host": args.host,
        "smtp_port": args.port,
        "smtp_security": args.security,
        "smtp_auth": args.auth,
        "smtp_username": args.username,
        "verify_tls": not args.no_verify_tls,
        "auth_plaintext": args.auth_plaintext,
    }
    if secret is not None:
        fields["postmark_token" if args.transport == "postmark" else "smtp_password"] = secret
    try:
        return AccountIn.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(_problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    """``--port: Input should be …`` per problem, never the value given."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "account"
        parts.append(f"{_FLAGS.get(field, field)}: {err['msg']}")
    return "; ".join(parts)


def _secret(args: argparse.Namespace) -> str | None:
    """The password (SMTP) or server token (Postmark): stdin, a prompt, or none."""
    needed = args.transport == "postmark" or args.auth != "none"
    if args.password_stdin:
        value = sys.stdin.read().rstrip("\r\n")
        if not value:
            raise UsageError("--password-stdin: stdin was empty")
        return value
    if not needed:
        return None
    if not sys.stdin.isatty():
        raise UsageError("no password given: pipe it in with --password-stdin")
    what = "Postmark server token" if args.transport == "postmark" else "Password"
    return getpass.getpass(f"{what} for {args.id}: ") or None


async def _list(ctx: Context, args: argparse.Namespace) -> int:
    rows = [("ID", "TRANSPORT", "HOST:PORT", "ENABLED", "HEALTH")]
    for a in await ctx.accounts.list(args.tenant):
        enabled = "yes" if a.is_outbound_enabled else "no"
        rows.append((a.id, a.transport.value, _hostport(a), enabled, _health(a)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1])
    return 0


def _hostport(a: Account) -> str:
    if a.transport.value == "postmark":
        return "-"
    return f"{a.smtp_host or '?'}:{account_view(a)['smtp_port']}"


def _where(a: Account) -> str:
    return f"{a.transport.value} {_hostport(a)}"


def _health(a: Account) -> str:
    if a.connection_error:
        return f"failing: {a.connection_error}"
    if a.connection_last_ok_at is not None:
        return f"ok at {a.connection_last_ok_at.isoformat(timespec='seconds')}"
    return "untested"


async def _show(ctx: Context, args: argparse.Namespace) -> int:
    account = await ctx.accounts.get(args.tenant, args.account)
    print(json.dumps(account_view(account), indent=2))
    return 0


async def _test(ctx: Context, args: argparse.Namespace) -> int:
    account, report = await ctx.accounts.test(args.tenant, args.account)
    for step in report.steps:
        print(f"{step.name:<8} ok" if step.ok else f"{step.name:<8} FAILED: {step.reply}")
    if not report.ok:
        return _fail(f"account {account.id} failed its test: {report.error}", 1)
    print(
        f"account {account.id}: test passed; `mailgate accounts enable {account.id}` "
        "switches outbound on"
    )
    return 0


async def _enable(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.accounts.set_enabled(args.tenant, args.account, True)
    print(f"account {args.account}: outbound enabled")
    return 0


async def _disable(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.accounts.set_enabled(args.tenant, args.account, False)
    print(f"account {args.account}: outbound disabled")
    return 0


async def _remove(ctx: Context, args: argparse.Namespace) -> int:
    account = await ctx.accounts.get(args.tenant, args.account)
    await ctx.accounts.delete(args.tenant, args.account)
    print(f"removed account {account.id} ({_where(account)}) of tenant {args.tenant}")
    return 0


_ACCOUNT_COMMANDS: dict[str, Callable[[Context, argparse.Namespace], Any]] = {
    "add": _add,
    "list": _list,
    "show": _show,
    "test": _test,
    "enable": _enable,
    "disable": _disable,
    "remove": _remove,
}


# --- secrets ----------------------------------------------------------------------------


async def _rotate(ctx: Context, args: argparse.Namespace) -> int:
    """Re-encrypt under the first key of ``MAILGATE_SECRET_KEY`` (never the dev key file:
    rotating means saying which key is new)."""
    if ctx.settings.secret_key is None:
        raise UsageError(
            'secrets rotate needs MAILGATE_SECRET_KEY="new,old" (new key first); '
            f"to make the new key: {KEY_HOWTO}"
        )
    box = SecretBox.from_setting(ctx.settings.secret_key.get_secret_value())
    count = await ctx.accounts.rotate(box)
    count += await WebhookStore(ctx.accounts.store.db, box).rotate(box)
    print(
        f"re-encrypted {count} secret(s) under the first key; "
        "MAILGATE_SECRET_KEY may now hold that key alone"
    )
    return 0


_SECRET_COMMANDS: dict[str, Callable[[Context, argparse.Namespace], Any]] = {"rotate": _rotate}


# --- tokens -----------------------------------------------------------------------------


async def _token_add(ctx: Context, args: argparse.Namespace) -> int:
    record, token = await ctx.tokens.create(args.tenant, args.name)
    print(token)
    print(
        f"token {record.id} for tenant {record.tenant}: shown this once, keep it now",
        file=sys.stderr,
    )
    return 0


async def _token_list(ctx: Context, args: argparse.Namespace) -> int:
    rows = [("ID", "NAME", "CREATED", "LAST USED")]
    for t in await ctx.tokens.list(args.tenant):
        used = t.last_used_at.isoformat(timespec="minutes") if t.last_used_at else "never"
        rows.append((t.id, t.name or "-", t.created_at.isoformat(timespec="seconds"), used))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3])
    return 0


async def _token_remove(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.tokens.delete(args.tenant, args.token_id)
    print(f"removed token {args.token_id} of tenant {args.tenant}")
    return 0


_TOKEN_COMMANDS: dict[str, Callable[[Context, argparse.Namespace], Any]] = {
    "add": _token_add,
    "list": _token_list,
    "remove": _token_remove,
}


# --- command lines ----------------------------------------------------------------------

Func = Callable[[argparse.Namespace], int]


def tenant_name(value: str) -> str:
    """``--tenant``, as the settings' tenants are checked (:func:`valid_tenant`)."""
    if not valid_tenant(value):
        raise argparse.ArgumentTypeError(TENANT_RULE)
    return value


def where_options(p: argparse.ArgumentParser, *, tenant: bool = True) -> None:
    """Which database (and key) to use: the same as ``mailgate serve`` by default."""
    p.add_argument("--db", metavar="URL", help="sqlite:///path, a file path, or postgresql://…")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.SERVE.value,
        help="whose database and key: serve (MAILGATE_SECRET_KEY) or dev (its key file)",
    )
    if tenant:
        p.add_argument(
            "--tenant", type=tenant_name, default="default", help="whose data (default: default)"
        )


def _action(sub: Any, name: str, func: Func, help: str, *, tenant: bool = True) -> Any:
    # no abbreviations: `--password SECRET` must be an error, not `--password-stdin SECRET`
    p = sub.add_parser(name, help=help, description=help, allow_abbrev=False)
    where_options(p, tenant=tenant)
    p.set_defaults(func=func, action=name)
    return p


def _accounts_parser(sub: Any, func: Func) -> None:
    accounts = sub.add_parser("accounts", help="sending accounts (works without a server)")
    a_sub = accounts.add_subparsers(title="accounts commands", required=True, metavar="COMMAND")
    add = _action(a_sub, "add", func, "add an account (outbound off until tested and enabled)")
    add.add_argument("--id", required=True, help="account id, e.g. agent1")
    add.add_argument(
        "--from",
        dest="from_",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="address or @domain it may send as (repeatable)",
    )
    add.add_argument("--transport", choices=["smtp", "postmark"], default="smtp")
    add.add_argument("--host", help="SMTP server")
    add.add_argument("--port", type=int, help="default: 465 ssl, 587 starttls, 25 none")
    add.add_argument("--security", choices=["ssl", "starttls", "none"], default="starttls")
    add.add_argument("--auth", choices=["plain", "login", "none"], default="plain")
    add.add_argument("--username")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (postmark: the server token) from stdin; "
        "without it a terminal is prompted",
    )
    add.add_argument(
        "--no-verify-tls",
        action="store_true",
        help="do not check the server certificate (testing only)",
    )
    add.add_argument(
        "--auth-plaintext", action="store_true", help="allow AUTH on a connection without TLS"
    )
    _action(a_sub, "list", func, "list accounts: id, transport, host:port, enabled, health")
    for name, help in (
        ("show", "print an account as JSON (secrets only as *_set)"),
        ("test", "connect, TLS, EHLO, AUTH, NOOP, QUIT; exit 1 if a step fails"),
        ("enable", "switch outbound on (refused until a test has passed)"),
        ("disable", "switch outbound off"),
        ("remove", "delete an account (no question asked)"),
    ):
        _action(a_sub, name, func, help).add_argument("account", metavar="ID")


def _secrets_parser(sub: Any, func: Func) -> None:
    secrets = sub.add_parser("secrets", help="the key that encrypts stored secrets")
    s_sub = secrets.add_subparsers(title="secrets commands", required=True, metavar="COMMAND")
    generate = s_sub.add_parser("generate", help="print a new key for MAILGATE_SECRET_KEY")
    generate.set_defaults(func=func, action="generate")
    _action(
        s_sub,
        "rotate",
        func,
        're-encrypt every secret under the first key of MAILGATE_SECRET_KEY="new,old"',
        tenant=False,
    )


def _tokens_parser(sub: Any, func: Func) -> None:
    tokens = sub.add_parser("tokens", help="per-tenant API tokens")
    t_sub = tokens.add_subparsers(title="tokens commands", required=True, metavar="COMMAND")
    add = _action(t_sub, "add", func, "make a token for a tenant (printed once)", tenant=False)
    add.add_argument("--tenant", type=tenant_name, required=True)
    add.add_argument("--name", default="", help="what it is for")
    listing = _action(t_sub, "list", func, "a tenant's tokens (never the token)", tenant=False)
    listing.add_argument("--tenant", type=tenant_name, required=True)
    remove = _action(t_sub, "remove", func, "revoke a token", tenant=False)
    remove.add_argument("token_id", metavar="ID")
    remove.add_argument("--tenant", type=tenant_name, required=True, help="whose token (a check)")
