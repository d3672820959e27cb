"""Accept means durable when the SQLite file's directory is removed under a running
``mailgate dev`` (a temp cleaner, a mistaken ``rm -r``): the open connections kept
committing to the unlinked file, so the API answered 202 and SMTP 250 for mail no
restart would see. Now such a commit is refused as the store being unavailable."""

from __future__ import annotations

import shutil
import smtplib

import httpx
import pytest

from tests.e2e.conftest import StartSync, Workspace

pytestmark = pytest.mark.e2e

MESSAGE = {"from": "app@example.com", "to": "you@example.com", "subject": "s", "text": "t"}


def test_nothing_is_accepted_into_a_database_file_removed_while_running(
    mailgate: StartSync, workspace: Workspace
) -> None:
    data = workspace.root / "data"
    data.mkdir()
    mg = mailgate("dev", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                  "--db", str(data / "mailgate.sqlite3"))  # fmt: skip
    assert mg.smtp_port is not None
    raw = "From: app@example.com\r\nTo: you@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    with httpx.Client(base_url=mg.web, timeout=10) as http:
        assert http.post("/api/v1/messages", json=MESSAGE).status_code == 202
        with smtplib.SMTP("127.0.0.1", mg.smtp_port, timeout=10) as smtp:
            smtp.sendmail("app@example.com", ["you@example.com"], raw)  # the writers are warm

            shutil.rmtree(data)

            refused = [http.post("/api/v1/messages", json=MESSAGE) for _ in range(3)]
            with pytest.raises(smtplib.SMTPDataError) as smtp_refused:
                smtp.sendmail("app@example.com", ["you@example.com"], raw)
        ready = http.get("/readyz")

    assert [r.status_code for r in refused] == [503, 503, 503], [r.text for r in refused]
    assert smtp_refused.value.smtp_code == 451
    assert ready.status_code == 503
