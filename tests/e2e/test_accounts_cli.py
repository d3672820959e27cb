"""``mailgate accounts|secrets|tokens`` as a user runs them: real subprocesses on a
SQLite file, a real aiosmtpd upstream for ``accounts test``, and a running
``mailgate serve`` for the per-tenant tokens."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Mapping

import httpx
import pytest

from tests.e2e.conftest import CLI_TIMEOUT, MAILGATE, RunCli, StartSync, Workspace
from tests.peers import Upstream

pytestmark = pytest.mark.e2e

PASSWORD = "Cli-Right-Pa55-9q2w"  #: the upstream's password; no output may contain it
WRONG = "Cli-Wrong-Pa55-4e5r"


def run(
    workspace: Workspace, *args: str, stdin: str = "", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``mailgate ARGS…`` with ``stdin`` piped in (the ``cli`` fixture gives /dev/null)."""
    return subprocess.run(
        [*MAILGATE, *args, "--db", str(workspace.db)],
        cwd=workspace.root,
        env=workspace.environ(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def add_args(up: Upstream, id: str = "agent1") -> tuple[str, ...]:
    return (
        "accounts", "add", "--id", id, "--from", f"{id}@example.com", "--from", "@agents.test",
        "--host", "127.0.0.1", "--port", str(up.port), "--security", "none",
        "--auth", "plain", "--username", "agent", "--auth-plaintext", "--password-stdin",
    )  # fmt: skip


def new_key(cli: RunCli) -> str:
    made = cli("secrets", "generate")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


async def test_add_test_enable_list_show_remove(workspace: Workspace, cli: RunCli) -> None:
    env = {"MAILGATE_SECRET_KEY": new_key(cli)}
    seen: list[str] = []

    async def mg(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = await asyncio.to_thread(run, workspace, *args, stdin=stdin, env=env)
        seen.extend((done.stdout, done.stderr))
        return done

    async with Upstream(credentials={"agent": PASSWORD}) as up:
        added = await mg(*add_args(up), stdin=WRONG + "\n")
        assert added.returncode == 0, added.stderr
        refused = await mg("accounts", "enable", "agent1")
        assert refused.returncode == 1
        assert refused.stderr.startswith("mailgate: error: account 'agent1' has not passed")
        assert refused.stderr.count("\n") == 1  # one readable line
        failed = await mg("accounts", "test", "agent1")
        assert failed.returncode == 1
        assert "connect  ok" in failed.stdout and "ehlo     ok" in failed.stdout
        assert "auth     FAILED: 535" in failed.stdout
        assert "failing: auth: 535" in (await mg("accounts", "list")).stdout

        assert (await mg("accounts", "remove", "agent1")).returncode == 0
        assert (await mg(*add_args(up), stdin=PASSWORD + "\n")).returncode == 0
        passed = await mg("accounts", "test", "agent1")
        assert passed.returncode == 0, passed.stdout + passed.stderr
        steps = [line.split()[:2] for line in passed.stdout.splitlines()[:5]]
        assert steps == [[s, "ok"] for s in ("connect", "ehlo", "auth", "noop", "quit")]
        assert up.logins == ["agent"]  # the wrong password never logged in
        enabled = await mg("accounts", "enable", "agent1")
        assert enabled.returncode == 0, enabled.stderr

    listed = (await mg("accounts", "list")).stdout.splitlines()
    assert listed[0].split() == ["ID", "TRANSPORT", "HOST:PORT", "ENABLED", "HEALTH"]
    assert listed[1].split()[:6] == ["agent1", "smtp", f"127.0.0.1:{up.port}", "yes", "ok", "at"]
    shown = json.loads((await mg("accounts", "show", "agent1")).stdout)
    assert shown["smtp_password_set"] is True and "smtp_password" not in shown
    assert shown["is_outbound_enabled"] is True and shown["from"][1] == "@agents.test"
    removed = await mg("accounts", "remove", "agent1")
    assert removed.stdout.strip() == (
        f"removed account agent1 (smtp 127.0.0.1:{up.port}) of tenant default"
    )
    gone = await mg("accounts", "show", "agent1")
    assert (gone.returncode, gone.stderr) == (1, "mailgate: error: no account 'agent1'\n")
    for text in seen:
        assert PASSWORD not in text and WRONG not in text


def test_password_never_from_argv_or_empty_stdin(workspace: Workspace, cli: RunCli) -> None:
    env = {"MAILGATE_SECRET_KEY": new_key(cli)}
    base = ("accounts", "add", "--id", "a", "--host", "127.0.0.1", "--username", "u")
    no_tty = run(workspace, *base, env=env)  # stdin is a pipe, no --password-stdin
    assert no_tty.returncode == 2
    assert no_tty.stderr == "mailgate: error: no password given: pipe it in with --password-stdin\n"
    argv = run(workspace, *base, "--password", PASSWORD, env=env)
    assert argv.returncode == 2 and "unrecognized arguments: --password " in argv.stderr
    bad = run(workspace, "accounts", "add", "--id", "bad id", "--port", "0", "--auth", "none")
    assert bad.returncode == 2
    assert bad.stderr.startswith("mailgate: error: --port: ") and "--id: " in bad.stderr


def test_serve_without_a_key_refuses_to_store_a_password(workspace: Workspace) -> None:
    done = run(workspace, "accounts", "add", "--id", "a", "--password-stdin", stdin=PASSWORD)
    assert done.returncode == 1
    assert "without a secret key" in done.stderr and "mailgate secrets generate" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_rotate_then_only_the_new_key_is_needed(workspace: Workspace, cli: RunCli) -> None:
    old, new = new_key(cli), new_key(cli)
    assert old != new and len(new) == 44
    for id in ("a1", "a2"):
        args = ("accounts", "add", "--id", id, "--host", "mx.test", "--password-stdin")
        assert (
            run(workspace, *args, stdin=PASSWORD, env={"MAILGATE_SECRET_KEY": old}).returncode == 0
        )
    before = run(workspace, "accounts", "show", "a1", env={"MAILGATE_SECRET_KEY": new})
    assert before.returncode == 2 and "cannot be decrypted" in before.stderr

    rotated = run(workspace, "secrets", "rotate", env={"MAILGATE_SECRET_KEY": f"{new},{old}"})
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.startswith("re-encrypted 2 secret(s) under the first key")

    after = run(workspace, "accounts", "list", env={"MAILGATE_SECRET_KEY": new})
    assert after.returncode == 0, after.stderr
    assert [line.split()[0] for line in after.stdout.splitlines()[1:]] == ["a1", "a2"]
    shown = run(workspace, "accounts", "show", "a2", env={"MAILGATE_SECRET_KEY": new})
    assert json.loads(shown.stdout)["smtp_password_set"] is True
    stale = run(workspace, "accounts", "show", "a1", env={"MAILGATE_SECRET_KEY": old})
    assert stale.returncode == 2 and "cannot be decrypted" in stale.stderr


def test_tenant_tokens_against_a_running_serve(workspace: Workspace, mailgate: StartSync) -> None:
    admin = {"MAILGATE_API_TOKEN": "admin-token-e2e"}
    acme = run(workspace, "tokens", "add", "--tenant", "acme", "--name", "ci")
    other = run(workspace, "tokens", "add", "--tenant", "other")
    assert acme.returncode == 0 and acme.stdout.startswith("mg_"), acme.stderr
    acme_token, other_token = acme.stdout.strip(), other.stdout.strip()
    assert "shown this once" in acme.stderr and acme_token not in acme.stderr
    listed = run(workspace, "tokens", "list", "--tenant", "acme")
    [header, row] = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "LAST", "USED"]
    assert row.split()[1] == "ci" and row.split()[3] == "never"
    assert acme_token not in listed.stdout

    mg = mailgate("serve", "--http", "127.0.0.1:0", "--db", str(workspace.db), env=admin)
    message = {"to": ["x@example.com"], "subject": "tenant", "text": "hi"}
    with httpx.Client(base_url=f"{mg.web}/api/v1", timeout=10) as http:
        as_acme = {"Authorization": f"Bearer {acme_token}"}
        sent = http.post("/messages", json=message, headers=as_acme)
        assert sent.status_code == 202, sent.text
        [message_id] = sent.json()["ids"]
        assert http.get(f"/messages/{message_id}", headers=as_acme).status_code == 200
        as_other = {"Authorization": f"Bearer {other_token}"}
        assert http.get(f"/messages/{message_id}", headers=as_other).status_code == 404
        used = run(workspace, "tokens", "list", "--tenant", "acme").stdout.splitlines()[1]
        assert used.split()[3] != "never"  # the API calls above were noted

        token_id = row.split()[0]
        removed = run(workspace, "tokens", "remove", token_id, "--tenant", "acme")
        assert removed.stdout.strip() == f"removed token {token_id} of tenant acme"
        assert http.get(f"/messages/{message_id}", headers=as_acme).status_code == 401


def test_mode_dev_uses_the_dev_key_file(workspace: Workspace) -> None:
    """``--mode dev`` needs no MAILGATE_SECRET_KEY: it makes and keeps the dev key, as
    ``mailgate dev`` does, so the accounts it stores are readable on the next run."""
    args = ("accounts", "add", "--id", "d1", "--host", "mx.test", "--password-stdin")
    assert run(workspace, *args, "--mode", "dev", stdin=PASSWORD).returncode == 0
    [key_file] = (workspace.root / "xdg-data").rglob("dev-secret.key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    shown = run(workspace, "accounts", "show", "d1", "--mode", "dev")
    assert json.loads(shown.stdout)["smtp_password_set"] is True
    as_serve = run(workspace, "accounts", "show", "d1")  # serve has no key configured
    assert as_serve.returncode == 1 and "without a secret key" in as_serve.stderr
