"""`mailgate dev` speaks TLS to clients that insist on it (issue 9): swaks with STARTTLS
and with TLS on connect, against the certificate it made in its data directory."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import httpx

from tests.e2e.conftest import StartSync, Workspace, dev_args


def _swaks(port: int, *tls: str, subject: str) -> subprocess.CompletedProcess[str]:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is not installed (.ci/run installs it)"
    command = [swaks, "--server", "127.0.0.1", "--port", str(port), "--from", "app@example.com",
               "--to", "you@example.com", "--auth", "PLAIN", "--auth-user", "app",
               "--auth-password", "s3cret", "--header", f"Subject: {subject}", *tls]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_swaks_sends_over_starttls_and_tls_on_connect(
    mailgate: StartSync, workspace: Workspace
) -> None:
    mg = mailgate(*dev_args(workspace), env={"MAILGATE_SMTP__TLS_PORT": "0"})
    assert mg.smtp_port is not None
    tls_port = int(_logged_tls_port(mg.stderr() + mg.stdout()))
    starttls = _swaks(mg.smtp_port, "--tls", subject="starttls")
    assert starttls.returncode == 0, starttls.stdout + starttls.stderr
    # swaks marks what went over TLS with ~: the message and its 250 did
    assert " -> STARTTLS" in starttls.stdout and "<~  250 2.0.0 OK" in starttls.stdout
    on_connect = _swaks(tls_port, "--tls-on-connect", subject="on connect")
    assert on_connect.returncode == 0, on_connect.stdout + on_connect.stderr
    assert "<~  250 2.0.0 OK" in on_connect.stdout
    assert "STARTTLS" not in on_connect.stdout  # not offered inside TLS

    cert = workspace.root / "xdg-data" / "mailgate" / "tls" / "cert.pem"
    ssl.create_default_context(cafile=str(cert))  # a certificate a client can trust
    with httpx.Client(base_url=mg.web, timeout=10) as http:
        items = http.get("/api/v1/inbox").json()["items"]
    assert sorted(m["subject"] for m in items) == ["on connect", "starttls"]


def _logged_tls_port(output: str) -> str:
    marker = "SMTP with implicit TLS on 127.0.0.1:"
    assert marker in output, output
    return output.split(marker, 1)[1].split()[0]
