"""``mailgate send`` against a running ``mailgate dev``: REST in, capture transport out."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    CLI_TIMEOUT,
    MAILGATE,
    RunCli,
    StartSync,
    Workspace,
    dev_args,
    run_together,
    wait_message,
)

pytestmark = pytest.mark.e2e


def _captured(http: httpx.Client, message_id: str) -> dict[str, Any]:
    """The inbox entry that the capture transport made for queued message ``message_id``."""
    items = http.get("/api/v1/inbox", params={"limit": 500}).json()["items"]
    found = []
    for item in items:
        event: dict[str, Any] = http.get(f"/api/v1/inbox/{item['id']}").json()
        if event["message"]["headers"].get("X-Mailgate-ID") == message_id:
            found.append(event)
    assert len(found) == 1, f"{message_id}: {len(found)} captures among {items}"
    return found[0]


def test_send_text_and_html_with_attachments(
    mailgate: StartSync, cli: RunCli, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace))

    html = "<!doctype html>\n<p>Grüße, <b>world</b> 🎉</p>\n"
    html_file = workspace.root / "body.html"
    html_file.write_text(html, encoding="utf-8")
    pdf = b"%PDF-1.4\n" + bytes(range(256)) + os.urandom(2048)
    (workspace.root / "report.pdf").write_bytes(pdf)
    csv = "name,amount\r\nÄrger,1\r\n".encode()
    (workspace.root / "data.csv").write_bytes(csv)

    plain, rich = run_together(
        cli,
        [
            "send", "--url", mg.web, "--to", "a@example.com", "--to", "b@example.com",
            "--subject", "Hello ✓", "--text", "Hi there",
        ],
        [
            "send", "--url", mg.web, "--to", "c@example.com",
            "--from", "Shop <shop@example.com>", "--subject", "Your report",
            "--html-file", str(html_file),
            "--attach", str(workspace.root / "report.pdf"),
            "--attach", str(workspace.root / "data.csv"),
            "--header", "X-Order: 42",
        ],
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert rich.returncode == 0, rich.stderr
    [plain_id] = plain.stdout.split()
    [rich_id] = rich.stdout.split()
    assert rich_id != plain_id

    with httpx.Client(base_url=mg.web, timeout=10) as http:
        for message_id in (plain_id, rich_id):
            message = wait_message(http, message_id)
            [attempt] = message["attempts"]
            assert attempt["transport"] == "capture"
            assert attempt["code"] == 250

        event = _captured(http, plain_id)
        assert event["source"] == "api"
        assert event["message"]["subject"] == "Hello ✓"
        assert event["message"]["body"].rstrip("\n") == "Hi there"
        assert event["message"]["html"] is None
        assert event["envelope"]["to"] == ["a@example.com", "b@example.com"]
        assert event["envelope"]["from"] == "mailgate@localhost"  # the default sender
        assert event["attachments"] == []

        event = _captured(http, rich_id)
        assert event["message"]["subject"] == "Your report"
        assert event["message"]["from"] == "Shop <shop@example.com>"
        assert event["envelope"]["from"] == "shop@example.com"
        assert event["message"]["headers"]["X-Order"] == "42"
        assert event["message"]["html"] == html
        assert event["message"]["body"] is None
        assert [(a["filename"], a["content_type"]) for a in event["attachments"]] == [
            ("report.pdf", "application/pdf"),
            ("data.csv", "text/csv"),
        ]
        for index, expected in enumerate((pdf, csv)):
            response = http.get(f"/api/v1/inbox/{event['id']}/attachments/{index}")
            assert response.status_code == 200
            assert response.content == expected
        assert (
            http.get(f"/api/v1/inbox/{event['id']}/attachments/0").headers["content-type"]
            == "application/pdf"
        )

        # ?q= searches subject, From and To.
        for query, subjects in [
            ("your REPORT", ["Your report"]),
            ("shop@example.com", ["Your report"]),
            ("b@example.com", ["Hello ✓"]),
            ("example.com", ["Hello ✓", "Your report"]),
            ("nothing-like-this", []),
        ]:
            found = http.get("/api/v1/inbox", params={"q": query}).json()["items"]
            assert sorted(item["subject"] for item in found) == subjects, query

        assert http.delete("/api/v1/inbox").json() == {"deleted": 2}
        assert http.get("/api/v1/inbox").json()["items"] == []


def test_send_idempotency_key_and_errors(
    mailgate: StartSync, cli: RunCli, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace))
    args = ("send", "--url", mg.web, "--to", "a@example.com", "--subject", "once", "--text", "x")

    first = cli(*args, "--id", "order-42-receipt")
    assert first.returncode == 0, first.stderr
    [message_id] = first.stdout.split()

    again, invalid = run_together(
        cli,
        [*args, "--id", "order-42-receipt"],
        ["send", "--url", mg.web, "--to", "not an address", "--subject", "s", "--text", "t"],
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [message_id]  # the first message's id
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("mailgate: rejected: to: "), invalid.stderr
    assert "not an address" in invalid.stderr  # the reason is passed on
    assert invalid.stdout == ""

    with httpx.Client(base_url=mg.web, timeout=10) as http:
        message = wait_message(http, message_id)
        assert message["key"] == "order-42-receipt"
        listed = http.get("/api/v1/messages").json()["items"]
        assert [m["id"] for m in listed] == [message_id]  # the repeat queued nothing
        assert len(http.get("/api/v1/inbox").json()["items"]) == 1


def test_send_input_it_cannot_use_is_a_clear_error(cli: RunCli, workspace: Workspace) -> None:
    """Each was a traceback: a file that cannot be read (missing, a directory, not UTF-8
    text), a --header without a colon, a URL httpx cannot parse (InvalidURL is no
    HTTPError). And a URL's password was repeated in the 'cannot reach' message."""
    (workspace.root / "latin1.txt").write_bytes(b"caf\xe9\n")
    base = ("send", "--to", "a@example.com", "--subject", "s")
    results = run_together(
        cli,
        [*base, "--text-file", str(workspace.root / "missing.txt")],
        [*base, "--text", "t", "--attach", str(workspace.root)],
        [*base, "--html-file", str(workspace.root / "latin1.txt")],
        [*base, "--text", "t", "--header", "no-colon"],
        [*base, "--text", "t", "--url", "http://[::1"],
        [*base, "--text", "t", "--url", "http://user:Url-Secret-9@127.0.0.1:1"],
    )
    missing, directory, latin1, header, bad_url, secret_url = results
    for result, code, reason in [
        (missing, 2, "argument --text-file: cannot read "),
        (directory, 2, "argument --attach: cannot read "),
        (latin1, 2, "latin1.txt is not UTF-8 text"),
        (header, 2, "argument --header: expected NAME:VALUE, got 'no-colon'"),
        (bad_url, 1, "mailgate: error: cannot reach http://[::1: "),
        (secret_url, 1, "mailgate: error: cannot reach http://***@127.0.0.1:1: "),
    ]:
        assert result.returncode == code, result.stderr
        assert reason in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "Url-Secret-9" not in secret_url.stderr


def test_ctrl_c_while_send_waits_is_a_quiet_exit_130(workspace: Workspace) -> None:
    """SIGINT while the gateway has not answered: KeyboardInterrupt went out of main as
    a traceback of httpcore's frames (every one-shot command did the same)."""
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        argv = ["send", "--url", url, "--to", "a@example.com", "--subject", "s", "--text", "t"]
        proc = subprocess.Popen(
            [*MAILGATE, *argv],
            env=workspace.environ(),
            cwd=workspace.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            silent.settimeout(CLI_TIMEOUT)
            connection, _ = silent.accept()  # the request is on its way: it waits now
            with connection:
                connection.recv(65536)
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=CLI_TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err == "mailgate: interrupted\n", err
