"""``mailgate webhooks add|list|remove`` (issue 7) as a user runs them: a real process on
a fresh SQLite file, the secret printed once and never again, the address rule applied."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailgate.crypto import generate_key


def _mailgate(*args: str, db: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILGATE_SECRET_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "mailgate", *args, "--db", str(db)],
        input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


KEY = generate_key()


def test_add_list_remove(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    added = _mailgate(
        "webhooks", "add", "https://192.0.2.10/hooks", "--kind", "message.sent",
        "--kind", "message.failed", "--description", "app", db=db,
    )  # fmt: skip
    # 192.0.2.0/24 is TEST-NET-1, which Python counts as private
    assert added.returncode == 1
    assert "192.0.2.10 is a private address: refused" in added.stderr

    env_allowed = ["--mode", "dev"]  # dev lets webhooks reach local receivers
    added = _mailgate("webhooks", "add", "http://127.0.0.1:8000/hook", "--kind",
                      "message.sent", *env_allowed, db=db)  # fmt: skip
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_") and "shown this once" in added.stderr
    webhook_id = added.stderr.split("added webhook ")[1].split()[0]

    given = _mailgate("webhooks", "add", "http://127.0.0.1:8001/", "--secret-stdin",
                      *env_allowed, db=db, stdin="a-long-enough-secret\n")  # fmt: skip
    assert given.returncode == 0 and given.stdout == ""  # a given secret is not echoed

    listed = _mailgate("webhooks", "list", *env_allowed, db=db)
    assert listed.returncode == 0
    assert webhook_id in listed.stdout and "message.sent" in listed.stdout
    assert secret not in listed.stdout and "a-long-enough-secret" not in listed.stdout
    assert "http://127.0.0.1:8001/" in listed.stdout

    other_tenant = _mailgate("webhooks", "list", "--tenant", "t2", *env_allowed, db=db)
    assert webhook_id not in other_tenant.stdout

    removed = _mailgate("webhooks", "remove", webhook_id, *env_allowed, db=db)
    assert removed.returncode == 0
    assert webhook_id not in _mailgate("webhooks", "list", *env_allowed, db=db).stdout
    again = _mailgate("webhooks", "remove", webhook_id, *env_allowed, db=db)
    assert again.returncode == 1 and "no webhook" in again.stderr

    short = _mailgate("webhooks", "add", "http://127.0.0.1:8001/", "--secret-stdin",
                      *env_allowed, db=db, stdin="tiny\n")  # fmt: skip
    assert short.returncode == 2 and "tiny" not in short.stderr + short.stdout
