"""No secret ever leaves: distinctive passwords go through every path that handles
one, and then every place a secret could surface is grepped for them.

Paths: an account created and changed over the API, its test failing AUTH and then
passing, mail delivered through it and through a relay URL holding a password, a
422 for a malformed body, the CLI adding and testing an account, and a per-tenant
token made with ``mailgate tokens add`` and used against the API.

Places: every API response body and header, every log record at DEBUG (mailgate,
uvicorn, aiosmtplib, aiosmtpd, httpx, httpcore), the CLI's stdout and stderr, and
the raw bytes of the SQLite database and its write-ahead log. The token's plaintext
may appear once: in the output of ``tokens add``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import httpx
import pytest

from mailgate.app import Gateway
from mailgate.cli import main
from mailgate.crypto import generate_key
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream

WRONG = "Leak-Wrong-Pw-3vQ8"  #: the password first set on the account
RIGHT = "Leak-Right-Pw-7kZ2"  #: the upstream's real one, set by PATCH
RELAY = "Leak-Relay-Pw-1xW5"  #: inside MAILGATE_RELAY_URL
CLI = "Leak-Cli-Pw-9mT4"  #: piped into `mailgate accounts add --password-stdin`
SECRETS = (WRONG, RIGHT, RELAY, CLI)
LOGGERS = ("", "mailgate", "uvicorn", "aiosmtplib", "mail.log", "httpx", "httpcore", "sqlalchemy")


class Seen:
    """Everything a secret could appear in, collected as the test goes."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []  #: (where, text)

    def response(self, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.texts.append((f"{response.request.url} headers", headers))
        self.texts.append((f"{response.request.url} body", response.text))
        return response


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    return caplog


async def test_no_secret_in_responses_logs_cli_output_or_database(
    start_gateway: GatewayFactory,
    db_url: str,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = Seen()
    key = generate_key()
    credentials = {"agent": RIGHT, "relayuser": RELAY, "cliuser": CLI}
    async with Upstream(credentials=credentials) as up:
        relay = f"smtp://relayuser:{RELAY}@127.0.0.1:{up.port}?auth_plaintext=true"
        async with start_gateway(secret_key=key, relay_url=relay) as gw:
            await _api_paths(gw, up, seen)
            token = await _cli_paths(db_url, up, key, seen, debug_logs, capsys, monkeypatch)
            async with api(gw, token) as client:  # the tenant token works: acme sees no account
                listed = seen.response(await client.get("/accounts"))
                assert [a["id"] for a in listed.json()["accounts"]] == ["default"]
            _grep(_database_bytes(db_url, wal=True), seen, debug_logs, token)
        assert sorted(set(up.logins)) == ["agent", "cliuser", "relayuser"]
    _grep(_database_bytes(db_url), seen, debug_logs, token)


async def _api_paths(gw: Gateway, up: Upstream, seen: Seen) -> None:
    async with api(gw) as client:
        body = {
            "id": "agent1",
            "from": ["agent1@example.com"],
            "smtp_host": "127.0.0.1",
            "smtp_port": up.port,
            "smtp_security": "none",
            "smtp_username": "agent",
            "smtp_password": WRONG,
            "auth_plaintext": True,
        }
        assert seen.response(await client.post("/accounts", json=body)).status_code == 201
        failed = seen.response(await client.post("/accounts/agent1/test")).json()
        assert failed["ok"] is False and failed["error"].startswith("auth: 535")
        bad = {"smtp_password": [RIGHT], "smtp_port": "x"}
        assert seen.response(await client.patch("/accounts/agent1", json=bad)).status_code == 422
        patch = {"smtp_password": RIGHT}
        assert seen.response(await client.patch("/accounts/agent1", json=patch)).status_code == 200
        assert seen.response(await client.post("/accounts/agent1/test")).json()["ok"] is True
        assert seen.response(await client.post("/accounts/default/test")).json()["ok"] is True
        seen.response(await client.post("/accounts/agent1/enable"))
        await _send(client, seen, "agent1@example.com")  # through the account
        await _send(client, seen, "app@example.com")  # through the relay URL
        for path in ("/accounts", "/accounts/agent1", "/accounts/default", "/stats"):
            seen.response(await client.get(path))


async def _send(client: httpx.AsyncClient, seen: Seen, sender: str) -> None:
    message = {"from": sender, "to": ["x@example.com"], "subject": "s", "text": "t"}
    queued = seen.response(await client.post("/messages", json=message))
    assert queued.status_code == 202, queued.text
    [message_id] = queued.json()["ids"]
    sent = await wait_for_state(client, message_id, "sent", "failed")
    assert sent["state"] == "sent", sent
    seen.texts.append((f"message {message_id}", str(sent)))
    seen.response(await client.get(f"/messages/{message_id}"))


async def _cli_paths(
    db_url: str,
    up: Upstream,
    key: str,
    seen: Seen,
    logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The CLI in this process (its logs reach caplog); returns the token it made."""
    monkeypatch.setenv("MAILGATE_SECRET_KEY", key)
    db = ["--db", db_url]
    add = ["accounts", "add", "--id", "cli1", "--host", "127.0.0.1", "--port", str(up.port)]
    add += ["--security", "none", "--username", "cliuser", "--auth-plaintext", "--password-stdin"]
    monkeypatch.setattr("sys.stdin", io.StringIO(CLI + "\n"))
    for argv in (
        add,
        ["accounts", "test", "cli1"],
        ["accounts", "show", "cli1"],
        ["accounts", "list"],
    ):
        assert await _cli([*argv, *db], logs) == 0
        seen.texts.append((" ".join(argv), _output(capsys)))
    assert await _cli(["tokens", "add", "--tenant", "acme", *db], logs) == 0
    made = capsys.readouterr()
    token = made.out.strip()
    assert token.startswith("mg_") and token not in made.err
    assert await _cli(["tokens", "list", "--tenant", "acme", *db], logs) == 0
    seen.texts.append(("tokens list", _output(capsys)))
    return token


async def _cli(argv: list[str], logs: pytest.LogCaptureFixture) -> int:
    code = await asyncio.to_thread(main, argv)
    for name in LOGGERS:  # main() sets some library loggers back to WARNING
        logs.set_level(logging.DEBUG, logger=name or None)
    return code


def _output(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def _database_bytes(db_url: str, *, wal: bool = False) -> list[tuple[str, str]]:
    """The database file and, while a gateway has it open, its write-ahead log."""
    path = Path(db_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal")]
    assert files[1].exists() or not wal
    return [(str(f), f.read_bytes().decode("latin-1")) for f in files if f.exists()]


def _grep(
    database: list[tuple[str, str]], seen: Seen, logs: pytest.LogCaptureFixture, token: str
) -> None:
    records = [(f"log {r.name}", f"{r.getMessage()} {r.__dict__!r}") for r in logs.records]
    places = [*seen.texts, *records, ("log text", logs.text), *database]
    assert len(records) > 50
    for where, text in places:
        for secret in (*SECRETS, token):
            assert secret not in text, f"{secret!r} appears in {where}"
