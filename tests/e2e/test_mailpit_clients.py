"""Mailpit's own client libraries against a running ``mailgate dev`` (issue 10): the PyPI
package ``mailpit-api-client`` and the npm package ``mailpit-api`` 2.x, unchanged, with the
base URL ``http://HOST:PORT/mailpit``. Mail arrives over SMTP; released mail goes to a
local aiosmtpd upstream through the relay, only to the allowed domain.

The npm package is installed once into ``.cache/npm`` of the repository (``npm install``
under a lock, so parallel workers share it); node must be on the machine (.ci/run
installs it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from mailpit.client.api import API

from tests.e2e.conftest import AsyncMailgate, StartAsync, Workspace, dev_args
from tests.peers import Upstream

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parent.parent.parent
NPM_DIR = ROOT / ".cache" / "npm"
CLIENT_JS = Path(__file__).with_name("mailpit_client.mjs")
TOKEN = "mailpit-clients-token-0123456789"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def receipt(subject: str = "Your receipt") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "Jane Doe <jane@example.com>"
    msg["Delivered-To"] = "jane@example.com"  # the PyPI client's Headers model requires it
    msg["Subject"] = subject
    msg["Date"] = "Tue, 02 Jan 2024 10:30:00 +0200"  # required by the PyPI client's Headers too
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    msg.set_content("Thanks for your order.")
    msg.add_alternative(
        '<p>Thanks! <img src="cid:logo"> <a href="http://127.0.0.1:9/x">x</a></p>', subtype="html"
    )
    payload = msg.get_payload()
    assert isinstance(payload, list) and isinstance(payload[1], EmailMessage)
    payload[1].add_related(
        PNG, maintype="image", subtype="png", cid="<logo>", disposition="inline", filename="l.png"
    )
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="r.pdf")
    return msg


def smtp_send(port: int, *messages: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        for msg in messages:
            client.send_message(msg)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def npm_client() -> Path:
    """``.cache/npm`` with mailpit-api 2.x installed (installed on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the mailpit-api client test (.ci/run has them)")
    with _locked(NPM_DIR.with_suffix(".lock")):
        if not (NPM_DIR / "node_modules" / "mailpit-api" / "package.json").exists():
            subprocess.run(
                ["npm", "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund",
                 "mailpit-api@2"],
                check=True, capture_output=True, timeout=300,
            )  # fmt: skip
    return NPM_DIR


async def start_dev(amailgate: StartAsync, workspace: Workspace, up: Upstream) -> AsyncMailgate:
    env = {
        "MAILGATE_API_TOKEN": TOKEN,
        "MAILGATE_RELAY_URL": up.url,
        "MAILGATE_INBOX__RELEASE_ALLOW": '["example.net"]',
    }
    return await amailgate(*dev_args(workspace), env=env)


async def test_npm_mailpit_api_client(amailgate: StartAsync, workspace: Workspace) -> None:
    module_dir = await asyncio.to_thread(npm_client)
    async with Upstream() as up:
        mg = await start_dev(amailgate, workspace, up)
        assert mg.smtp_port is not None
        await asyncio.to_thread(smtp_send, mg.smtp_port, receipt(), receipt("Other mail"))
        node = await asyncio.create_subprocess_exec(
            "node", str(CLIENT_JS), str(module_dir), f"{mg.web}/mailpit", TOKEN,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(node.communicate(), 60)
        assert node.returncode == 0, stderr.decode() + mg.output()
        out: dict[str, Any] = json.loads(stdout)
        await asyncio.wait_for(up.arrived.wait(), 10)
        [released] = up.received
    assert released.rcpt_tos == ["someone@example.net"]
    assert released.message["Subject"] == "Your receipt"

    assert (out["info"]["Messages"], out["info"]["Unread"]) == (2, 2)
    assert out["webui"]["MessageRelay"]["Enabled"] is True
    assert (out["list"]["total"], out["list"]["count"], out["list"]["messages_count"]) == (2, 2, 2)
    assert [m["Subject"] for m in out["search"]["messages"]] == ["Your receipt"]
    message = out["message"]
    assert message["From"] == {"Name": "Shop", "Address": "shop@example.com"}
    assert message["Text"] == "Thanks for your order.\n"
    assert out["latest"]["Subject"] == "Other mail"
    assert out["headers"]["Message-Id"] == ["<Your-receipt@example.com>"]
    assert "Subject: Your receipt" in out["raw"]
    assert out["part"] == {"type": "application/pdf", "text": "%PDF-1.4"}
    assert out["thumb"] == {"type": "image/png", "size": len(PNG)}
    assert (out["unread"], out["unreadAfter"], out["readAll"], out["unreadAfterAll"]) == (
        "ok", 1, "ok", 0
    )  # fmt: skip
    assert out["tags"] == ["from-js", "Second"] and out["tagsAfter"] == ["renamed"]
    assert out["waited"]["ID"] == out["sent"]["ID"] and out["waited"]["Tags"] == ["node"]
    assert out["release"] == "ok"
    assert "400" in out["releaseRefused"] and "allowlist" in out["releaseRefused"]
    assert out["chaosSet"]["Recipient"] == {"ErrorCode": 451, "Probability": 50}
    assert out["chaos"] == out["chaosSet"]
    assert out["chaosReset"]["Recipient"]["Probability"] == 0
    assert "/mailpit/api/v1/message/" in out["html"] and out["text"] == message["Text"]
    assert out["htmlCheck"]["Total"]["Tests"] > 0
    [link] = out["linkCheck"]["Links"]  # loopback: not requested, as Mailpit refuses it
    assert (link["URL"], link["StatusCode"], out["linkCheck"]["Errors"]) == (
        "http://127.0.0.1:9/x", 0, 1
    )  # fmt: skip
    assert (out["afterDeleteSearch"], out["afterDeleteOne"], out["afterDeleteAll"]) == (2, 1, 0)


def _pypi_client_session(base: str, smtp_port: int) -> dict[str, Any]:
    """What the PyPI client covers: list, get, headers, parts, read status, delete."""
    api = API(base, timeout=10)
    smtp_send(smtp_port, receipt(), receipt("Other mail"))
    listed = api.get_messages()
    seen: dict[str, Any] = {"total": listed.total, "count": listed.count}
    first = next(m for m in listed.messages if m.subject == "Your receipt")
    seen["summary"] = (first.from_, first.read, first.attachments, first.created.tzinfo)
    message = api.get_message(first.id)
    seen["message"] = (message.subject, message.read, [a.file_name for a in message.attachments])
    seen["inline"] = [(a.part_id, a.content_id) for a in message.inline]
    seen["part"] = api.get_message_attachment(first.id, message.attachments[0].part_id)
    headers = api.get_message_headers(first.id)
    seen["headers"] = (headers.message_id, headers.delivered_to, headers.date[0].year)
    api.put_messages([first.id], "Read", False)  # the client sends a form body
    seen["unread"] = api.get_messages().unread
    api.delete_messages([first.id])
    seen["after_delete"] = [m.subject for m in api.get_messages().messages]
    api.delete_messages([])  # an empty list: every message
    seen["after_clear"] = api.get_messages().total
    return seen


async def test_pypi_mailpit_api_client(amailgate: StartAsync, workspace: Workspace) -> None:
    async with Upstream() as up:
        mg = await start_dev(amailgate, workspace, up)
        assert mg.smtp_port is not None
        # the PyPI client has no auth option: the token goes in the URL, as Basic auth
        base = mg.web.replace("http://", f"http://mailpit:{TOKEN}@") + "/mailpit"
        seen = await asyncio.to_thread(_pypi_client_session, base, mg.smtp_port)
    assert (seen["total"], seen["count"]) == (2, 2)
    sender, read, attachments, zone = seen["summary"]
    assert (sender.name, sender.address) == ("Shop", "shop@example.com")
    assert (read, attachments) == (False, 1)
    assert zone is not None
    assert seen["message"] == ("Your receipt", True, ["r.pdf"])
    assert seen["inline"] == [("1.2.2", "logo")]
    assert seen["part"] == "%PDF-1.4"
    assert seen["headers"] == (["<Your-receipt@example.com>"], ["jane@example.com"], 2024)
    assert seen["unread"] == 2
    assert seen["after_delete"] == ["Other mail"] and seen["after_clear"] == 0
