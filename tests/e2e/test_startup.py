"""Starting servers: where they listen, what they refuse, and the API token."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunCli, StartSync, Workspace, run_together

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-Zx81"


def test_refuses_to_start(cli: RunCli, workspace: Workspace) -> None:
    """Bad set-ups end with a non-zero exit and a message saying why, before any banner."""
    db = str(workspace.db)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        public, port_in_use, bad_relay, bad_address = run_together(
            cli,
            ["serve", "--http", "0.0.0.0:0", "--db", db],
            ["dev", "--http", "127.0.0.1:0", "--smtp", busy, "--db", db],
            ["serve", "--http", "127.0.0.1:0", "--db", db, "--relay", "ftp://relay.example.com"],
            ["dev", "--smtp", "nonsense", "--db", db],
        )

    # A public API without a token (README: mailgate refuses to bind it).
    assert public.returncode != 0
    assert "MAILGATE_API_TOKEN" in public.stderr
    # The SMTP port is taken (after the web server already started: it must be undone).
    assert port_in_use.returncode == 1
    assert "cannot listen" in port_in_use.stderr, port_in_use.stderr[-6000:]
    # A relay URL with an unknown scheme.
    assert bad_relay.returncode == 2
    assert "relay URL scheme 'ftp'" in bad_relay.stderr
    # Not HOST:PORT: an argparse usage error.
    assert bad_address.returncode == 2
    assert "expected HOST:PORT" in bad_address.stderr

    for result in (public, port_in_use, bad_relay, bad_address):
        assert "web http" not in result.stdout, result.stdout


def test_api_token_is_required_when_public(
    mailgate: StartSync, cli: RunCli, workspace: Workspace
) -> None:
    mg = mailgate(
        "serve", "--http", "0.0.0.0:0", "--db", str(workspace.db),
        env={"MAILGATE_API_TOKEN": TOKEN},
    )  # fmt: skip
    assert mg.web_host == "0.0.0.0"
    message = {"to": "a@example.com", "subject": "authorised", "text": "x"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    header = {"X-API-Token": TOKEN}
    with httpx.Client(base_url=mg.web, timeout=10) as http:  # loopback only
        assert http.get("/healthz").status_code == 200  # liveness needs no token
        for path in ("/api/v1/messages", "/api/v1/inbox"):
            missing = http.get(path)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert http.get(path, headers={"X-API-Token": TOKEN[:-1]}).status_code == 401
            assert http.get(path, headers=bearer).status_code == 200
            assert http.get(path, headers=header).status_code == 200

        assert http.post("/api/v1/messages", json=message).status_code == 401
        accepted = http.post("/api/v1/messages", json=message, headers=header)
        assert accepted.status_code == 202, accepted.text
        [posted_id] = accepted.json()["ids"]

        sent = cli(
            "send", "--url", mg.web, "--token", TOKEN,
            "--to", "b@example.com", "--subject", "via cli", "--text", "x",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        [cli_id] = sent.stdout.split()

        listed = http.get("/api/v1/messages", headers=bearer).json()["items"]
        assert {m["id"] for m in listed} == {posted_id, cli_id}  # the 401 POST queued nothing


def test_default_database_is_in_the_data_dir(mailgate: StartSync, workspace: Workspace) -> None:
    """Without --db, dev keeps its SQLite file under $XDG_DATA_HOME/mailgate/."""
    mg = mailgate("dev", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0")
    expected = Path(workspace.env["XDG_DATA_HOME"]) / "mailgate" / "dev.sqlite3"
    assert mg.db == f"sqlite:///{expected}"
    assert expected.is_file()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_banner_url_works_for_ipv6(mailgate: StartSync, workspace: Workspace) -> None:
    """The web URL the banner prints must be usable as printed (RFC 3986 §3.2.2 brackets)."""
    mg = mailgate("dev", "--smtp", "[::1]:0", "--http", "[::1]:0", "--db", str(workspace.db))
    port = mg.web.rsplit(":", 1)[1]
    assert mg.printed_web_url == f"http://[::1]:{port}"


def test_db_upgrade_migrates_the_database_serve_uses(cli: RunCli, workspace: Workspace) -> None:
    """Without --db, `db upgrade` prepares the very file `mailgate serve` opens."""
    result = cli("db", "upgrade")
    assert result.returncode == 0, result.stderr
    expected = Path(workspace.env["XDG_DATA_HOME"]) / "mailgate" / "serve.sqlite3"
    assert expected.is_file() and str(expected) in result.stdout
