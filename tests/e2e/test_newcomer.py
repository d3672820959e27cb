"""What a new user meets first: settings errors, ``config``, ``send`` output, ``dev --fresh``."""

from __future__ import annotations

import json
import re
import signal
import smtplib
from email.message import EmailMessage

import httpx
import pytest

from tests.e2e.conftest import RunCli, StartSync, Workspace, dev_args, run_together

pytestmark = pytest.mark.e2e

SECRET = "hunter2-never-print-me"


def test_settings_errors_name_the_setting_and_never_print_its_value(
    cli: RunCli, workspace: Workspace
) -> None:
    """A misspelt secret in .env or the TOML file must not be echoed (pydantic's input_value)."""
    (workspace.root / ".env").write_text(f"MAILGATE_RELAY_PASSWORD={SECRET}\n", encoding="utf-8")
    toml = workspace.root / "mailgate.toml"
    toml.write_text(f'relay_pasword = "{SECRET}"\n[http]\nport = "{SECRET}"\n', encoding="utf-8")

    dotenv, both = run_together(cli, ["config"], ["config", "--config", str(toml)])

    assert dotenv.returncode == 2, dotenv.stdout
    assert SECRET not in dotenv.stderr + dotenv.stdout
    assert "mailgate_relay_password: unknown setting (did you mean relay_url?)" in dotenv.stderr
    assert both.returncode == 2
    assert SECRET not in both.stderr + both.stdout
    assert "relay_pasword: unknown setting" in both.stderr
    assert "http.port: Input should be a valid integer" in both.stderr


def test_config_shows_the_database_actually_used(cli: RunCli, workspace: Workspace) -> None:
    data_dir = workspace.root / "xdg-data" / "mailgate"
    serve, dev = run_together(cli, ["config"], ["config", "--mode", "dev"])
    assert json.loads(serve.stdout)["db_url"] == f"sqlite:///{data_dir / 'serve.sqlite3'}"
    assert json.loads(dev.stdout)["db_url"] == f"sqlite:///{data_dir / 'dev.sqlite3'}"

    url = f"postgresql://mailgate:{SECRET}@db.example.com/mail"
    shown = cli("config", env={"MAILGATE_DB_URL": url})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["db_url"] == "postgresql://mailgate:***@db.example.com/mail"
    assert SECRET not in shown.stdout


def test_send_prints_the_id_or_a_reason_per_item(
    mailgate: StartSync, cli: RunCli, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace))
    ok, bad = run_together(
        cli,
        ["send", "--url", mg.web, "--to", "a@example.com", "--subject", "Hi", "--text", "x"],
        ["send", "--url", mg.web, "--to", "not an address", "--subject", "Hi", "--text", "x"],
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # no httpx INFO line
    (message_id,) = ok.stdout.split()
    with httpx.Client(base_url=mg.web) as http:
        assert http.get(f"/api/v1/messages/{message_id}").status_code == 200

    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.startswith("mailgate: rejected: to: "), bad.stderr
    assert "{" not in bad.stderr  # a reason, not raw JSON

    unreachable = cli("send", "--url", "http://127.0.0.1:9", "--to", "a@example.com",
                      "--subject", "Hi", "--text", "x")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("mailgate: error: cannot reach http://127.0.0.1:9")


def test_send_explains_an_http_error(
    mailgate: StartSync, cli: RunCli, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace), env={"MAILGATE_API_TOKEN": "right"})
    result = cli(
        "send", "--url", mg.web, "--token", "wrong", "--to", "a@example.com",
        "--subject", "Hi", "--text", "x",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "mailgate: error: 401 invalid API token", result.stderr


def _capture_one(port: int) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "kept"
    msg.set_content("body")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(msg)


def test_dev_says_what_it_kept_and_fresh_starts_empty(
    mailgate: StartSync, workspace: Workspace
) -> None:
    first = mailgate(*dev_args(workspace))
    assert "inbox has 0 message(s) kept from before" in first.stdout()
    assert first.smtp_port is not None
    _capture_one(first.smtp_port)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0

    again = mailgate(*dev_args(workspace))
    assert "inbox has 1 message(s) kept from before; --fresh starts" in again.stdout()
    again.signal(signal.SIGTERM)
    assert again.wait() == 0

    fresh = mailgate(*dev_args(workspace, "--fresh"))
    assert "inbox has 0 message(s) kept from before" in fresh.stdout()
    with httpx.Client(base_url=fresh.web) as http:
        assert http.get("/api/v1/inbox").json()["items"] == []


def test_readme_commands_run_as_written() -> None:
    """Every command in the README's shell blocks exists after `scripts/dev` (no bare
    `mailgate`: it is not on PATH until the venv is activated)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    blocks = readme.split("```sh\n")[1:]
    commands = [
        # the command itself, after any NAME=value assignments to its environment
        next(word for word in line.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", word))
        for block in blocks
        for line in block.split("```", 1)[0].splitlines()
        if line.strip() and not line.startswith((" ", "#"))
    ]
    assert commands, "no shell examples found"
    external = {"curl", "swaks", "apt-get", "pip", "source"}
    for command in commands:
        if "/" in command:
            assert (root / command).exists(), f"README runs {command}, which does not exist"
        else:
            assert command in external, f"README runs {command!r}, which is not on PATH"
