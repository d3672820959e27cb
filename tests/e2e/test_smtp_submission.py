"""SMTP submission with the real CLI (issue 9): ``mailgate smtp-users`` manages users
without a server; ``serve --smtp-submission`` takes their mail; a ``250`` means the
message is committed, so a kill -9 right after it loses nothing; swaks logs in with
PLAIN and LOGIN."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import subprocess

import pytest

from tests.e2e.conftest import RunCli, StartAsync, Workspace
from tests.peers import Upstream

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: App <app@example.com>\r\nTo: to@example.org\r\nSubject: durable\r\n\r\n"
    b"sent once, after a crash\r\n"
)


def _add_user(cli: RunCli, workspace: Workspace) -> str:
    """``smtp-users add``: the password it generated (printed once, on stdout)."""
    added = cli("smtp-users", "add", "app", "--sender", "@example.com", "--db", str(workspace.db))
    assert added.returncode == 0, added.stderr
    assert "shown this once" in added.stderr
    password = added.stdout.strip()
    assert len(password) >= 16 and password.isalnum()  # safe in a shell or an option list
    return password


def _serve(workspace: Workspace, upstream: Upstream) -> tuple[str, ...]:
    return (
        "serve",
        "--http",
        "127.0.0.1:0",
        "--smtp-submission",
        "127.0.0.1:0",
        "--db",
        str(workspace.db),
        "--relay",
        upstream.url,
    )


def _submit(port: int, password: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.login("app", password)
        smtp.mail("app@example.com")
        smtp.rcpt("to@example.org")
        return smtp.data(MESSAGE)


def test_smtp_users_add_list_remove(cli: RunCli, workspace: Workspace) -> None:
    _add_user(cli, workspace)
    db = ("--db", str(workspace.db))
    listed = cli("smtp-users", "list", *db)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[1].split() == ["app", "default", "@example.com"]
    again = cli("smtp-users", "add", "app", *db)
    assert again.returncode == 1 and "taken" in again.stderr
    bad = cli("smtp-users", "add", "other", "--sender", "not an address", *db)
    assert bad.returncode == 2 and "senders" in bad.stderr
    removed = cli("smtp-users", "remove", "app", *db)
    assert removed.returncode == 0, removed.stderr
    assert cli("smtp-users", "list", *db).stdout.split("\n")[1:] == [""]
    gone = cli("smtp-users", "remove", "app", *db)
    assert gone.returncode == 1 and "no SMTP user" in gone.stderr


async def test_kill_9_right_after_250_then_delivered_after_restart(
    cli: RunCli, workspace: Workspace, amailgate: StartAsync, upstream: Upstream
) -> None:
    password = _add_user(cli, workspace)
    # a process that takes mail but sends none: the message must outlive it
    first = await amailgate(*_serve(workspace, upstream), env={"MAILGATE_DELIVERY__ENABLED": "0"})
    assert first.smtp_port is not None
    code, text = await asyncio.to_thread(_submit, first.smtp_port, password)
    assert code == 250, text
    await first.kill()  # SIGKILL to the process group, right after the 250
    assert upstream.received == []

    second = await amailgate(*_serve(workspace, upstream))
    await upstream.wait_for(1)
    await asyncio.sleep(0.5)
    await second.kill()
    [got] = upstream.received
    assert got.mail_from == "app@example.com" and got.rcpt_tos == ["to@example.org"]
    assert got.raw.endswith(MESSAGE.partition(b"\r\n\r\n")[2])
    assert f"id {text.decode().rsplit(' ', 1)[1]}".encode() in got.raw  # the one queued


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_swaks_submits_with_each_mechanism(
    cli: RunCli,
    workspace: Workspace,
    amailgate: StartAsync,
    upstream: Upstream,
    mechanism: str,
) -> None:
    password = _add_user(cli, workspace)
    mg = await amailgate(*_serve(workspace, upstream))
    swaks = shutil.which("swaks")
    assert swaks, "swaks is not installed (.ci/run installs it)"
    common = [swaks, "--server", "127.0.0.1", "--port", str(mg.smtp_port), "--to", "to@example.org"]
    login = ["--auth", mechanism, "--auth-user", "app", "--auth-password", password]
    sent = await asyncio.to_thread(
        subprocess.run,
        [*common, "--from", "app@example.com", *login, "--header", f"Subject: via {mechanism}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "235 2.7.0" in sent.stdout and "queued as" in sent.stdout
    refused = await asyncio.to_thread(
        subprocess.run,
        [*common, "--from", "boss@evil.test", *login],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "553 5.7.1" in refused.stdout
    await upstream.wait_for(1)
    assert upstream.received[0].message["Subject"] == f"via {mechanism}"
