"""``--log-format json`` and the log file (``--log-file``, ``LOG_FILE``), as a user runs them:
a message goes through ``mailgate dev``'s REST API and the dispatcher's line about it is
found in the file, without the message's content or the API token."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunCli, StartSync, SyncMailgate, Workspace, dev_args, run_together
from tests.e2e.conftest import wait_message as wait_sent

pytestmark = pytest.mark.e2e

TOKEN = "mg-e2e-log-token-Zq81xVb4Lp0c"  #: the API token; must never reach a log line
GUESS = "mg-e2e-log-wrong-guess-Hy62"  #: a wrong token a client tried
SUBJECT = "Quarterly figures Kx93"  #: content: never logged
BODY = "the body text Wm27 stays out of the log"  #: content: never logged


def _send_one(mg: SyncMailgate, headers: dict[str, str] | None = None) -> str:
    """POST one message to two recipients, wait until the capture transport took it."""
    message = {"to": ["a@example.com", "b@example.com"], "subject": SUBJECT, "text": BODY}
    with httpx.Client(base_url=mg.web, timeout=10, headers=headers) as http:
        response = http.post("/api/v1/messages", json=message)
        assert response.status_code == 202, response.text
        [message_id] = response.json()["ids"]
        wait_sent(http, message_id)
    return str(message_id)


def _stop(mg: SyncMailgate) -> None:
    """SIGTERM, then the clean exit that has written every log line."""
    mg.signal(signal.SIGTERM)
    assert mg.wait() == 0, mg.output()
    assert "mailgate dev: stopped" in mg.stdout()


def test_json_lines_to_the_log_file(mailgate: StartSync, workspace: Workspace) -> None:
    log_file = workspace.root / "logs" / "mailgate.jsonl"
    log_file.parent.mkdir()
    log_file.write_text("", encoding="utf-8")  # appended to, never truncated: see below
    args = dev_args(workspace, "--log-format", "json", "--log-file", str(log_file))
    mg = mailgate(*args, env={"MAILGATE_API_TOKEN": TOKEN})
    with httpx.Client(base_url=mg.web, timeout=10) as http:
        refused = http.get("/api/v1/messages", headers={"Authorization": f"Bearer {GUESS}"})
        assert refused.status_code == 401
    message_id = _send_one(mg, {"Authorization": f"Bearer {TOKEN}"})
    _stop(mg)

    text = log_file.read_text(encoding="utf-8")
    entries = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert entries, mg.output()
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    [delivered] = [e for e in entries if e.get("message_id") == message_id]
    assert delivered["logger"] == "mailgate.deliver.dispatcher"
    assert delivered["level"] == "INFO"
    assert delivered["recipients"] == 2  # a count: the addresses are the text format's
    assert "a@example.com" not in json.dumps(delivered)
    assert message_id in delivered["message"]
    assert "account" not in delivered  # captured in dev: no account
    assert any(e["message"] == "shutting down" for e in entries)

    for leak in (TOKEN, GUESS, SUBJECT, BODY):
        assert leak not in text, f"{leak!r} is in the log file"
    assert message_id not in mg.stderr()  # the log went to the file, not stderr


def test_log_file_env_appends_in_text_format(mailgate: StartSync, workspace: Workspace) -> None:
    """``LOG_FILE`` alone picks the file; the default text line names the message id and
    the recipients."""
    log_file = workspace.root / "mailgate.log"
    log_file.write_text("kept from before\n", encoding="utf-8")
    mg = mailgate(*dev_args(workspace), env={"LOG_FILE": str(log_file)})
    message_id = _send_one(mg)
    _stop(mg)

    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "kept from before"  # appended
    [delivered] = [line for line in lines if message_id in line]
    assert " INFO mailgate.deliver.dispatcher: " in delivered, delivered
    assert delivered.endswith(" [to a@example.com, b@example.com]"), delivered
    assert SUBJECT not in delivered and BODY not in delivered
    with pytest.raises(json.JSONDecodeError):
        json.loads(delivered)
    assert message_id not in mg.stderr()


def test_option_wins_over_env(mailgate: StartSync, workspace: Workspace) -> None:
    chosen, ignored, ignored_too = (workspace.root / n for n in ("opt.log", "env.log", "mg.log"))
    env = {"LOG_FILE": str(ignored), "MAILGATE_LOG_FILE": str(ignored_too)}
    env["MAILGATE_LOG_FORMAT"] = "json"
    mg = mailgate(*dev_args(workspace, "--log-file", str(chosen), "--log-format", "text"), env=env)
    _stop(mg)
    assert not ignored.exists() and not ignored_too.exists()
    assert "shutting down" in chosen.read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(chosen.read_text(encoding="utf-8").splitlines()[0])


def test_mailgate_log_env_settings(mailgate: StartSync, workspace: Workspace) -> None:
    """``MAILGATE_LOG_FILE`` and ``MAILGATE_LOG_FORMAT``; the former wins over ``LOG_FILE``."""
    chosen, generic = workspace.root / "mailgate.jsonl", workspace.root / "generic.log"
    env = {"MAILGATE_LOG_FILE": str(chosen), "LOG_FILE": str(generic)}
    env["MAILGATE_LOG_FORMAT"] = "json"
    _stop(mailgate(*dev_args(workspace), env=env))
    assert not generic.exists()
    entries: list[dict[str, Any]] = [
        json.loads(line) for line in chosen.read_text(encoding="utf-8").splitlines()
    ]
    assert any(e["message"] == "shutting down" for e in entries), entries


def test_help_and_refusals(cli: RunCli, workspace: Workspace) -> None:
    missing = workspace.root / "no-such-dir" / "mailgate.log"
    dev_help, serve_help, bad_file, bad_format = run_together(
        cli,
        ["dev", "--help"],
        ["serve", "--help"],
        ["dev", "--log-file", str(missing), "--db", str(workspace.db)],
        ["dev", "--log-format", "xml"],
    )
    for shown in (dev_help, serve_help):
        assert shown.returncode == 0, shown.stderr
        assert "--log-format {text,json}" in shown.stdout
        assert "--log-file PATH" in shown.stdout
        assert "LOG_FILE" in shown.stdout and "MAILGATE_LOG_FORMAT" in shown.stdout

    assert bad_file.returncode == 2
    assert f"mailgate: error: cannot open log file {missing}" in bad_file.stderr
    assert not workspace.db.exists()  # refused before starting anything
    assert bad_format.returncode == 2
    assert "invalid choice: 'xml'" in bad_format.stderr
    bad_env = cli("dev", "--db", str(workspace.db), env={"MAILGATE_LOG_FORMAT": "xml"})
    assert bad_env.returncode == 2
    assert "mailgate: error: unknown log format 'xml'" in bad_env.stderr


def test_debug_logs_show_no_statement_parameters(mailgate: StartSync, workspace: Workspace) -> None:
    """At DEBUG every library logs more, and a database driver's log would show SQL
    statements with their parameters (stored values: here a password in a webhook's URL).
    Those stay out; mailgate's own DEBUG lines and the secret-free rest stay in."""
    password = "hook-url-pw-Rt58Lm"  # the secret the log must not show
    mg = mailgate(*dev_args(workspace, "--log-level", "DEBUG"))
    with httpx.Client(base_url=mg.web, timeout=10) as http:
        url = f"http://hook:{password}@127.0.0.1:9/in"
        created = http.post("/api/v1/webhooks", json={"url": url, "kinds": ["message.sent"]})
        assert created.status_code == 201, created.text
        assert password not in created.text
    _send_one(mg)
    _stop(mg)
    output = mg.output()
    assert " DEBUG " in output  # it did log at DEBUG
    assert " aiosqlite: " not in output
    assert password not in output
