"""Stopping ``mailgate dev`` with a signal while SMTP clients are connected (RFC 5321 §3.8)."""

from __future__ import annotations

import signal
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage

import httpx
import pytest

from tests.e2e.conftest import StartSync, Workspace, dev_args

pytestmark = pytest.mark.e2e

CLIENT_TIMEOUT = 15.0  #: upper bound for any single SMTP reply


@contextmanager
def _session(port: int) -> Iterator[smtplib.SMTP]:
    smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=CLIENT_TIMEOUT)
    try:
        assert smtp.ehlo()[0] == 250
        yield smtp
    finally:
        smtp.close()


def _assert_closed(smtp: smtplib.SMTP) -> None:
    """After its 421 the server hangs up: the next command finds no one there."""
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.noop()


def _message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "app@example.com"
    msg["To"] = "you@example.com"
    msg["Subject"] = subject
    msg.set_content("sent while the server was shutting down\n")
    return msg.as_bytes()


def test_sigterm_says_421_to_an_idle_session(mailgate: StartSync, workspace: Workspace) -> None:
    mg = mailgate(*dev_args(workspace))
    assert mg.smtp_port is not None
    with _session(mg.smtp_port) as idle:
        mg.signal(signal.SIGTERM)
        code, text = idle.getreply()  # unsolicited: the server speaks first
        assert code == 421, text
        _assert_closed(idle)
    assert mg.wait() == 0, mg.output()
    assert "mailgate dev: stopped" in mg.stdout()


def test_open_transaction_finishes_during_shutdown(
    mailgate: StartSync, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace), env={"MAILGATE_SMTP__SHUTDOWN_GRACE": "30"})
    assert mg.smtp_port is not None
    with _session(mg.smtp_port) as idle, _session(mg.smtp_port) as busy:
        assert busy.mail("app@example.com")[0] == 250
        assert busy.rcpt("you@example.com")[0] == 250
        mg.signal(signal.SIGTERM)
        assert idle.getreply()[0] == 421  # shutdown has begun
        code, text = busy.data(_message("finished in the grace period"))
        assert code == 250, text
        assert busy.getreply()[0] == 421  # then it is told to go, too
        _assert_closed(busy)
    assert mg.wait() == 0, mg.output()

    # The 250 meant durable: the message is there after a restart on the same database.
    again = mailgate(*dev_args(workspace))
    with httpx.Client(base_url=again.web, timeout=10) as http:
        items = http.get("/api/v1/inbox").json()["items"]
    assert [item["subject"] for item in items] == ["finished in the grace period"]


def test_sigint_ends_a_stalled_transaction_after_the_grace(
    mailgate: StartSync, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace), env={"MAILGATE_SMTP__SHUTDOWN_GRACE": "0.5"})
    assert mg.smtp_port is not None
    with _session(mg.smtp_port) as stalled:
        assert stalled.mail("app@example.com")[0] == 250
        mg.signal(signal.SIGINT)
        code, text = stalled.getreply()  # never sends DATA; the grace runs out
        assert code == 421, text
        _assert_closed(stalled)
    assert mg.wait() == 0, mg.output()
    assert "mailgate dev: stopped" in mg.stdout()


#: a sync capture handler that never returns (a call stuck on a dead peer, say)
_STUCK_HANDLER = """
import threading

def stuck(event):
    threading.Event().wait()
"""


def test_a_sync_handler_stuck_for_good_does_not_keep_the_process_alive(
    mailgate: StartSync, workspace: Workspace
) -> None:
    """A sync handler's thread cannot be stopped; its answer is dropped and the process
    still ends after the grace. Python joins a ThreadPoolExecutor's threads at exit, so
    one handler stuck for good kept ``mailgate dev`` running after it said "stopped"."""
    (workspace.root / "stuck_handler.py").write_text(_STUCK_HANDLER, encoding="utf-8")
    env = {
        "MAILGATE_SMTP__HANDLERS": '["stuck_handler:stuck"]',  # python -m: cwd on the path
        "MAILGATE_SMTP__POOL__TIMEOUT": "0.5",
        "MAILGATE_SMTP__SHUTDOWN_GRACE": "1",
    }
    mg = mailgate(*dev_args(workspace), env=env)
    assert mg.smtp_port is not None
    with _session(mg.smtp_port) as smtp:
        smtp.mail("app@example.com")
        smtp.rcpt("you@example.com")
        code, text = smtp.data(_message("its handler never returns"))
        assert code == 451, text
    mg.signal(signal.SIGTERM)
    assert mg.wait(10) == 0, mg.output()
    assert "mailgate dev: stopped" in mg.stdout()
