"""``mailgate queue``: the same messages and views as the API, from the command line."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import RunCli, StartSync, Workspace, run_together

pytestmark = pytest.mark.e2e


def test_queue_list_show_cancel_retry(
    mailgate: StartSync, cli: RunCli, workspace: Workspace
) -> None:
    db = str(workspace.db)
    mg = mailgate("serve", "--http", "127.0.0.1:0", "--db", db)
    message = {"to": "a@example.com", "subject": "for nobody", "text": "x", "account": "nope"}
    with httpx.Client(base_url=mg.web, timeout=10) as http:
        [message_id] = http.post("/api/v1/messages", json=message).json()["ids"]
        listed, shown = run_together(
            cli, ["queue", "list", "--db", db], ["queue", "show", message_id, "--db", db]
        )
        assert listed.returncode == 0, listed.stderr
        [header, row] = listed.stdout.splitlines()
        assert header.split()[:3] == ["ID", "STATE", "CREATED"]
        assert row.startswith(f"{message_id}  queued ")
        assert "for nobody" in row and "account 'nope'" in row  # why it waits
        assert json.loads(shown.stdout) == http.get(f"/api/v1/messages/{message_id}").json()

        cancelled = cli("queue", "cancel", message_id, "--db", db)
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout)["state"] == "cancelled"
        assert http.get(f"/api/v1/messages/{message_id}").json()["state"] == "cancelled"

    again, missing = run_together(
        cli,
        ["queue", "retry", message_id, "--db", db],
        ["queue", "show", "01a200cd-0000-7000-8000-000000000000", "--db", db],
    )
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.strip() == (
        f"mailgate: error: message {message_id} is cancelled; cannot become queued"
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("mailgate: error: no message")
    other = cli("queue", "list", "--db", db, "--tenant", "acme")
    assert other.stdout.splitlines()[1:] == []  # another tenant's queue is its own
