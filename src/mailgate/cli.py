"""The ``mailgate`` command: ``dev``, ``serve``, ``send``, ``config``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import mimetypes
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from mailgate import __version__
from mailgate.app import Gateway, Mode, database_url, format_hostport
from mailgate.errors import ConfigError
from mailgate.settings import Settings, load_settings
from mailgate.store import Database
from mailgate.store.database import redact_url

__all__ = ["main"]

log = logging.getLogger("mailgate")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(getattr(args, "log_level", "INFO"))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"mailgate: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"mailgate: invalid settings:\n{exc}", file=sys.stderr)
        return 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every SMTP command at INFO and warns about its own internals
    # (Session.login_data) on every AUTH; keep its real warnings only.
    smtp_log = logging.getLogger("mail.log")
    smtp_log.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    smtp_log.addFilter(lambda record: "login_data" not in record.getMessage())
    logging.getLogger("alembic").setLevel(logging.WARNING)


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
    serve.set_defaults(func=_run_server, mode=Mode.SERVE)

    send = sub.add_parser("send", help="submit a message to a running mailgate")
    send.add_argument("--to", action="append", required=True, help="recipient (repeatable)")
    send.add_argument("--cc", action="append", default=[])
    send.add_argument("--bcc", action="append", default=[])
    send.add_argument("--from", dest="sender", help="sender; default: the gateway's")
    send.add_argument("--subject", required=True)
    send.add_argument("--text", help="plain-text body")
    send.add_argument("--text-file", type=Path)
    send.add_argument("--html", help="HTML body")
    send.add_argument("--html-file", type=Path)
    send.add_argument("--attach", action="append", type=Path, default=[], metavar="FILE")
    send.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
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

    config = sub.add_parser("config", help="print the effective settings (secrets hidden)")
    config.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    config.set_defaults(func=_print_config)
    return parser


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http", metavar="HOST:PORT", type=_hostport, help="web listen address")
    p.add_argument("--db", metavar="URL", help="sqlite:///path, a file path, or postgresql://…")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _hostport(value: str) -> dict[str, Any]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return {"host": host.strip("[]") or "127.0.0.1", "port": int(port)}


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "http", None):
        overrides["http"] = args.http
    if getattr(args, "smtp", None):
        overrides["smtp"] = args.smtp
    if getattr(args, "db", None):
        overrides["db_url"] = (
            args.db if "://" in args.db else f"sqlite:///{Path(args.db).resolve()}"
        )
    if getattr(args, "relay", None):
        overrides["relay_url"] = args.relay
    return load_settings(args.config, **overrides)


def _run_server(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        asyncio.run(_serve(settings, args.mode))
    except OSError as exc:
        print(f"mailgate: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: Settings, mode: Mode) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(settings, mode=mode) as gateway:
        parts = [f"web {gateway.http_url}"]
        if gateway.smtp_address:
            parts.insert(0, f"SMTP {format_hostport(*gateway.smtp_address)}")
        print(
            f"mailgate {mode.value}: " + ", ".join(parts) + f" (db {redact_url(gateway.db_url)})",
            flush=True,
        )
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
    for field, inline, path in (
        ("text", args.text, args.text_file),
        ("html", args.html, args.html_file),
    ):
        if path is not None:
            message[field] = path.read_text(encoding="utf-8")
        elif inline is not None:
            message[field] = inline
    if args.sender:
        message["from"] = args.sender
    if args.id:
        message["id"] = args.id
    if args.header:
        message["headers"] = dict(h.split(":", 1) for h in args.header)
        message["headers"] = {k.strip(): v.strip() for k, v in message["headers"].items()}
    message["attachments"] = [_attachment(p) for p in args.attach]
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/api/v1/messages", json=message, headers=headers, timeout=60
        )
    except httpx.HTTPError as exc:
        print(f"mailgate: error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 202:
        print(f"mailgate: error: {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    body: dict[str, Any] = response.json()
    for item in body["rejected"]:
        print(f"mailgate: rejected: {item['reason']}", file=sys.stderr)
    for message_id in body["ids"]:
        print(message_id)
    return 0


def _attachment(path: Path) -> dict[str, str]:
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {
        "filename": path.name,
        "content_type": content_type,
        "content": base64.b64encode(path.read_bytes()).decode(),
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
    settings = load_settings(args.config)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0
