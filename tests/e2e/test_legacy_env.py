"""Issue 8: the old agent's ``.env`` works unchanged in mailgate's working directory.

``mailgate config`` shows the values it gives and where each came from, never the
passwords; a bad value names the legacy variable; and ``mailgate serve`` delivers
through the account it describes (STARTTLS, login, sender) to a real upstream.
"""

from __future__ import annotations

import json
from email.utils import parseaddr

import httpx
import pytest

from mailgate.legacy_env import LEGACY_NAMES
from tests.e2e.conftest import RunCli, StartAsync, Workspace, await_messages
from tests.peers import Upstream
from tests.tls import server_context

pytestmark = pytest.mark.e2e

SMTP_PASSWORD = "Agent-Smtp-Pw-4kQ9 #x"  #: a space and a # : the .env quotes it
ADMIN_PASS = "Agent-Admin-Pw-8rT2"

AGENT_ENV = """\
# the old agent's .env, as it was
FIREBASE_SERVICE_ACCOUNT_PATH=/etc/agent/service-account.json
FIREBASE_DATABASE_URL=https://acme-prod-default-rtdb.europe-west1.firebasedatabase.app
SMTP_SERVER={server}
SMTP_PORT={port}
SMTP_USERNAME=mailer@example.com
SMTP_PASSWORD="{password}"
SMTP_USE_TLS=true
SMTP_FROM_EMAIL=noreply@example.com
SMTP_FROM_NAME=Acme, Inc.
POLL_INTERVAL=5
MAX_RETRY_COUNT=4
LOG_LEVEL=debug
ADMIN_PORT=8080
ADMIN_USER=admin
ADMIN_PASS={admin_pass}
"""


@pytest.fixture
def agent_workspace(workspace: Workspace) -> Workspace:
    """The workspace with none of the legacy names from the developer's environment."""
    for name in LEGACY_NAMES:
        workspace.env.pop(name, None)
    return workspace


def write_agent_env(
    workspace: Workspace, server: str = "smtp.example.com", port: int = 587
) -> None:
    text = AGENT_ENV.format(server=server, port=port, password=SMTP_PASSWORD, admin_pass=ADMIN_PASS)
    (workspace.root / ".env").write_text(text, encoding="utf-8")


def test_config_shows_the_agent_values_and_their_sources(
    cli: RunCli, agent_workspace: Workspace
) -> None:
    write_agent_env(agent_workspace)
    # a MAILGATE_ name wins over the .env's legacy one; a legacy name in the environment
    # wins over the .env's too, and a bad one is named
    shown = cli("config", env={"MAILGATE_FIRESTORE__POLL_INTERVAL": "7"})
    bad = cli("config", env={"POLL_INTERVAL": "abc"})
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    firestore = settings["firestore"]
    assert firestore["project_id"] == "acme-prod"
    assert firestore["credentials"] == "/etc/agent/service-account.json"
    assert firestore["poll_interval"] == 7
    assert firestore["max_retry_count"] == 4
    assert settings["http"]["port"] == 8080
    assert settings["admin_user"] == "admin"
    assert settings["admin_pass"] == "**********"
    assert settings["relay_url"] == "**********"
    assert settings["_sources"] == {
        "relay_url": "legacy SMTP_SERVER, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD,"
        " SMTP_USE_TLS, SMTP_FROM_EMAIL, SMTP_FROM_NAME (.env)",
        "admin_user": "legacy ADMIN_USER (.env)",
        "admin_pass": "legacy ADMIN_PASS (.env)",
        "http.port": "legacy ADMIN_PORT (.env)",
        "firestore.project_id": "legacy FIREBASE_DATABASE_URL (.env)",
        "firestore.credentials": "legacy FIREBASE_SERVICE_ACCOUNT_PATH (.env)",
        "firestore.poll_interval": "env MAILGATE_FIRESTORE__POLL_INTERVAL",
        "firestore.max_retry_count": "legacy MAX_RETRY_COUNT (.env)",
    }
    for secret in (SMTP_PASSWORD, ADMIN_PASS, "Agent-Smtp-Pw"):
        assert secret not in shown.stdout + shown.stderr

    assert bad.returncode == 2, bad.stdout
    assert "POLL_INTERVAL: Input should be a valid number" in bad.stderr
    assert "(legacy name of firestore.poll_interval)" in bad.stderr
    assert "Agent-Smtp-Pw" not in bad.stdout + bad.stderr


async def test_serve_delivers_through_the_agent_account(
    amailgate: StartAsync, agent_workspace: Workspace
) -> None:
    """SMTP_USE_TLS=true on 587: STARTTLS required, the certificate checked (the test's
    self-signed one is trusted through SSL_CERT_FILE), then AUTH with the agent's login."""
    context = server_context(agent_workspace.root)
    credentials = {"mailer@example.com": SMTP_PASSWORD}
    async with Upstream(tls="starttls", ssl_context=context, credentials=credentials) as up:
        write_agent_env(agent_workspace, "127.0.0.1", up.port)
        trust = {"SSL_CERT_FILE": str(agent_workspace.root / "cert.pem")}
        mg = await amailgate(
            "serve", "--http", "127.0.0.1:0", "--db", str(agent_workspace.db), env=trust
        )
        admin = ("admin", ADMIN_PASS)  # the agent's admin login opens the API too
        async with httpx.AsyncClient(base_url=mg.web, timeout=10, auth=admin) as http:
            message = {"to": ["a@example.com"], "subject": "From the agent", "text": "hi\n"}
            async with httpx.AsyncClient(base_url=mg.web, timeout=10) as anonymous:
                refused = await anonymous.post("/api/v1/messages", json=message)
                assert refused.status_code == 401
            response = await http.post("/api/v1/messages", json=message)
            assert response.status_code == 202, response.text
            [received] = await up.wait_for(1)
            await await_messages(http, response.json()["ids"])

    assert up.logins == ["mailer@example.com"]
    assert received.mail_from == "noreply@example.com"
    assert parseaddr(received.message["From"]) == ("Acme, Inc.", "noreply@example.com")
    log = mg.stderr()
    assert " DEBUG " in log  # LOG_LEVEL=debug from the .env
    assert "Agent-Smtp-Pw" not in log + mg.stdout()
