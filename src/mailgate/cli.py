"""The ``mailgate`` command: ``dev``, ``serve``, ``send``, ``config``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import difflib
import json
import logging
import mimetypes
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mailgate import __version__, cli_accounts, cli_queue, cli_smtp_users, cli_webhooks
from mailgate.app import Gateway, Mode, database_url, format_hostport
from mailgate.errors import ConfigError, StoreUnavailable
from mailgate.logs import FORMATS, setup_logging
from mailgate.settings import Settings, environ_or_dotenv, load_settings, setting_origins
from mailgate.store import Database
from mailgate.store.database import redact_url

if TYPE_CHECKING:
    import httpx

__all__ = ["main"]

log = logging.getLogger("mailgate")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C in a one-shot command (the servers handle it)
        print("mailgate: interrupted", file=sys.stderr)
        return 130  # the shell's 128 + SIGINT


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        setup_logging(
            getattr(args, "log_level", "INFO"),
            getattr(args, "log_format", "text"),
            getattr(args, "log_file", None),
        )
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mailgate: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"mailgate: invalid settings:\n{settings_errors(exc)}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:  # a missing directory, a refused connection: no bug
        print(f"mailgate: error: cannot use the database: {exc}", file=sys.stderr)
        return 1


def settings_errors(exc: ValidationError) -> str:
    """One line per problem, naming the setting and never its value (it may be a password)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        if err["type"] == "extra_forbidden":
            hint = _closest_setting(name)
            suggestion = f" (did you mean {hint}?)" if hint else ""
            lines.append(f"  {name}: unknown setting{suggestion}")
        else:
            lines.append(f"  {name}: {err['msg']}")
    return "\n".join(lines)


def _closest_setting(name: str) -> str | None:
    """The known setting a misspelt name most likely meant (``relay_password`` → ``relay_url``):
    one starting with the same word when there is one (not ``reports.password``)."""
    key = name.lower().removeprefix("mailgate_").replace("__", ".")
    known = [*Settings.model_fields, *_nested_settings()]
    same_word = [k for k in known if _first_word(k) == _first_word(key)]
    match = difflib.get_close_matches(key, same_word, n=1, cutoff=0.5)
    match = match or difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return match[0] if match else None


def _first_word(name: str) -> str:
    return name.replace(".", "_").split("_", 1)[0]


def _nested_settings() -> list[str]:
    names = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names += [f"{section}.{sub}" for sub in model.model_fields]
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailgate",
        description="Self-hosted email gateway; `mailgate dev` captures mail for development.",
    )
    parser.add_argument("--version", action="version", version=f"mailgate {__version__}")
    sub = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="capture server: keep every message, deliver nothing",
        description="SMTP capture on 127.0.0.1:1025 and the web API/UI on "
        "127.0.0.1:8787; every message lands in the inbox, nothing leaves.",
    )
    _server_options(dev)
    dev.add_argument("--smtp", metavar="HOST:PORT", type=_hostport, help="SMTP listen address")
    dev.add_argument(
        "--fresh", action="store_true", help="start with an empty inbox (deletes the kept mail)"
    )
    dev.set_defaults(func=_run_server, mode=Mode.DEV)

    serve = sub.add_parser(
        "serve",
        help="the gateway: queue and deliver through a relay",
        description="Web API + dispatcher. Without --relay, messages are "
        "captured to the inbox as in dev.",
    )
    _server_options(serve)
    serve.add_argument(
        "--relay",
        metavar="URL",
        help="smtp://[user:pass@]host:port, smtp+starttls://…, smtps://…; "
        "?from= sets the default sender (env MAILGATE_RELAY_URL)",
    )
    serve.add_argument(
        "--smtp-submission",
        metavar="HOST:PORT",
        type=_hostport,
        help="also take mail from SMTP users (mailgate smtp-users) at this address"
        " (settings smtp.mode = submission, smtp.host, smtp.port)",
    )
    serve.add_argument(
        "--firestore",
        action="store_true",
        help="also send what Firestore documents in the mail collection ask for, and write"
        " each outcome back (settings firestore.*; env MAILGATE_FIRESTORE__ENABLED)",
    )
    serve.set_defaults(func=_run_server, mode=Mode.SERVE)

    send = sub.add_parser("send", help="submit a message to a running mailgate")
    send.add_argument("--to", action="append", required=True, help="recipient (repeatable)")
    send.add_argument("--cc", action="append", default=[])
    send.add_argument("--bcc", action="append", default=[])
    send.add_argument("--from", dest="sender", help="sender; default: the gateway's")
    send.add_argument("--subject", required=True)
    send.add_argument("--text", help="plain-text body")
    send.add_argument("--text-file", type=_text_file, metavar="FILE")
    send.add_argument("--html", help="HTML body")
    send.add_argument("--html-file", type=_text_file, metavar="FILE")
    send.add_argument("--attach", action="append", type=_attachment, default=[], metavar="FILE")
    send.add_argument("--header", action="append", type=_header, default=[], metavar="NAME:VALUE")
    send.add_argument("--id", help="idempotency key")
    send.add_argument(
        "--url",
        default=os.environ.get("MAILGATE_URL", "http://127.0.0.1:8787"),
        help="gateway URL (env MAILGATE_URL)",
    )
    send.add_argument(
        "--token",
        default=os.environ.get("MAILGATE_API_TOKEN"),
        help="API token (env MAILGATE_API_TOKEN)",
    )
    send.set_defaults(func=_send)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(title="db commands", required=True, metavar="COMMAND")
    upgrade = db_sub.add_parser(
        "upgrade", help="apply schema migrations (serve/dev do it on start)"
    )
    upgrade.add_argument(
        "--db", metavar="URL", help="sqlite:///path, a file path, or postgresql://…"
    )
    upgrade.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    upgrade.set_defaults(func=_db_upgrade)

    config = sub.add_parser(
        "config",
        help="print the effective settings (secrets hidden)",
        description="The effective settings as JSON, secrets hidden; `_sources` names where"
        " each value not left at its default came from: flag, env MAILGATE_X, .env MAILGATE_X,"
        " legacy NAME (env or .env: the old agent's or the Trigger Email extension's"
        " variables), config file.",
    )
    config.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    config.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.SERVE.value,
        help="whose database to show when db_url is unset (default: serve)",
    )
    config.set_defaults(func=_print_config)
    cli_accounts.add_commands(sub, _settings)  # accounts, secrets, tokens
    cli_queue.add_commands(sub, _settings)
    cli_webhooks.add_commands(sub, _settings)
    cli_smtp_users.add_commands(sub, _settings)
    return parser


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", metavar="HOST:PORT", type=_hostport, help="web listen address")
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        type=_hostport,
        help="also serve /metrics, /healthz and /readyz, without a token, at this address",
    )
    p.add_argument("--db", metavar="URL", help="sqlite:///path, a file path, or postgresql://…")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument(
        "--log-level",
        type=_log_level,
        choices=LOG_LEVELS,
        default=os.environ.get("MAILGATE_LOG_LEVEL") or environ_or_dotenv("LOG_LEVEL") or "INFO",
        help="any case (env MAILGATE_LOG_LEVEL, then LOG_LEVEL from the env or .env; default INFO)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("MAILGATE_LOG_FORMAT") or "text",
        help="text (default) or json: one object a line with time, level, logger, message "
        "and, for a delivery, message_id, account and recipients (env MAILGATE_LOG_FORMAT)",
    )
    p.add_argument(
        "--log-file",
        metavar="PATH",
        default=os.environ.get("MAILGATE_LOG_FILE") or environ_or_dotenv("LOG_FILE") or None,
        help="append the log to PATH instead of stderr (env MAILGATE_LOG_FILE, then LOG_FILE"
        " from the environment or .env)",
    )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(value: str) -> str:
    """Any case, WARN for WARNING; checked here too because argparse applies ``type`` but
    not ``choices`` to a default, and the default may come from LOG_LEVEL."""
    level = "WARNING" if value.upper() == "WARN" else value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)} (any case), got {value!r}"
            " (from the flag, MAILGATE_LOG_LEVEL or LOG_LEVEL)"
        )
    return level


def _hostport(value: str) -> dict[str, Any]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return {"host": host.strip("[]") or "127.0.0.1", "port": int(port)}


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "http", None):
        overrides["http"] = args.http
    if getattr(args, "metrics", None):
        metrics = {"metrics_host": args.metrics["host"], "metrics_port": args.metrics["port"]}
        overrides["http"] = {**overrides.get("http", {}), **metrics}
    if getattr(args, "smtp", None):
        overrides["smtp"] = args.smtp
    if getattr(args, "smtp_submission", None):
        overrides["smtp"] = {**args.smtp_submission, "mode": "submission"}
    if getattr(args, "db", None):
        overrides["db_url"] = (
            args.db if "://" in args.db else f"sqlite:///{Path(args.db).resolve()}"
        )
    if getattr(args, "relay", None):
        overrides["relay_url"] = args.relay
    if getattr(args, "firestore", False):
        overrides["firestore"] = {"enabled": True}
    return load_settings(args.config, **overrides)


def _run_server(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        asyncio.run(_serve(settings, args.mode, fresh=getattr(args, "fresh", False)))
    except OSError as exc:
        print(f"mailgate: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: Settings, mode: Mode, *, fresh: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(settings, mode=mode, fresh_inbox=fresh) as gateway:
        parts = [f"web {gateway.http_url}"]
        if gateway.smtp_address:
            parts.insert(0, f"SMTP {format_hostport(*gateway.smtp_address)}")
        print(
            f"mailgate {mode.value}: " + ", ".join(parts) + f" (db {redact_url(gateway.db_url)})",
            flush=True,
        )
        if gateway.metrics_address is not None:
            where = format_hostport(*gateway.metrics_address)
            print(f"mailgate {mode.value}: metrics http://{where}/metrics", flush=True)
        if mode is Mode.DEV:
            kept = await gateway.inbox.count()
            hint = "" if fresh else "; --fresh starts with an empty one"
            print(f"mailgate dev: inbox has {kept} message(s) kept from before{hint}", flush=True)
        await stop.wait()
        log.info("shutting down")
    print(f"mailgate {mode.value}: stopped", flush=True)


def _send(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {
        "to": args.to,
        "subject": args.subject,
        "cc": args.cc,
        "bcc": args.bcc,
    }
    for field, inline, from_file in (
        ("text", args.text, args.text_file),
        ("html", args.html, args.html_file),
    ):
        if from_file is not None:
            message[field] = from_file
        elif inline is not None:
            message[field] = inline
    if args.sender:
        message["from"] = args.sender
    if args.id:
        message["id"] = args.id
    if args.header:
        message["headers"] = dict(args.header)
    message["attachments"] = args.attach
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    import httpx  # here, not at the top: the servers the other commands start need none

    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/api/v1/messages", json=message, headers=headers, timeout=60
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        where = _without_credentials(args.url)
        print(f"mailgate: error: cannot reach {where}: {exc}", file=sys.stderr)
        return 1
    body = _json_or_none(response)
    rejected = body.get("rejected") if isinstance(body, dict) else None
    if isinstance(rejected, list):
        for item in rejected:
            print(f"mailgate: rejected: {item.get('reason')}", file=sys.stderr)
    if response.status_code != 202 or not isinstance(body, dict):
        if not rejected:
            print(f"mailgate: error: {_failure_reason(response, body)}", file=sys.stderr)
        return 1
    for message_id in body.get("ids", []):
        print(message_id)
    return 0


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _failure_reason(response: httpx.Response, body: Any) -> str:
    """A readable reason: the API's ``detail`` when it gives one, else the status line."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
        )
    reason = detail or response.reason_phrase or "unexpected answer"
    return f"{response.status_code} {reason}"


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` masked, for a message."""
    return re.sub(r"(//)[^/@]*@", r"\1***@", url)


def _header(value: str) -> tuple[str, str]:
    """``--header NAME:VALUE``; checked by argparse, so a bad one is a usage error."""
    name, sep, header = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {value!r}")
    return name.strip(), header.strip()


def _text_file(value: str) -> str:
    """A ``--text-file``/``--html-file``'s content: a usage error when it cannot be read."""
    try:
        return Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{value} is not UTF-8 text") from None


def _attachment(value: str) -> dict[str, str]:
    path = Path(value)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from None
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {
        "filename": path.name,
        "content_type": content_type,
        "content": base64.b64encode(content).decode(),
    }


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = database_url(settings, Mode.SERVE)  # the database `mailgate serve` would open

    async def upgrade() -> None:
        db = Database(url)
        try:
            await db.migrate()
        finally:
            await db.aclose()

    asyncio.run(upgrade())
    print(f"mailgate: database {redact_url(url)} is up to date")
    return 0


def _print_config(args: argparse.Namespace) -> int:
    """The effective settings; ``db_url`` is the database actually used, password masked;
    ``_sources`` maps each setting some source gave (dotted: ``http.port``) to that source,
    in a key of its own so the output stays the JSON of the settings it always was."""
    settings = load_settings(args.config)
    shown = settings.model_dump(mode="json")
    shown["db_url"] = redact_url(database_url(settings, Mode(args.mode)))
    shown["_sources"] = setting_origins(args.config)  # names of sources only, never values
    print(json.dumps(shown, indent=2))
    return 0
