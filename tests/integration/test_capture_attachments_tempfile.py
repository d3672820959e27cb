"""Attachment storage modes of the capture server (issue 9): in ``tempfile`` mode the
handlers get each attachment's file instead of its content; the files are private, hold
the exact bytes, and go when their message is deleted, cleared, pruned, refused by a
handler, or older than ``cleanup_after``. ``memory`` mode (the default) writes nothing."""

from __future__ import annotations

import asyncio
import base64
import os
import smtplib
import stat
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailgate.app import Mode
from mailgate.inbox.attachment_files import file_name
from tests.integration import capture_handlers
from tests.integration.conftest import GatewayFactory, api, send_raw

KEEP = "tests.integration.capture_handlers:keep"
PDF = b"%PDF-1.4\n" + os.urandom(70_000)
BLOB = bytes(range(256)) * 8


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    capture_handlers.SEEN.clear()
    yield
    capture_handlers.SEEN.clear()


def _tempfile(temp_dir: Path, **more: Any) -> dict[str, Any]:
    storage = {"mode": "tempfile", "temp_dir": str(temp_dir), **more}
    return {"handlers": [KEEP], "attachment_storage": storage}


def _message(subject: str = "two attachments") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", subject
    message.set_content("see attached")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    message.add_attachment(BLOB, maintype="application", subtype="octet-stream",
                           filename="../../.ssh/authorized keys")  # fmt: skip
    return message.as_bytes(policy=policy.SMTP)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def _gone(paths: list[Path], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while any(p.exists() for p in paths):  # noqa: ASYNC110 (a file system, not an event)
            await asyncio.sleep(0.05)


async def test_tempfile_mode_hands_over_private_files_with_the_exact_bytes(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "attachments"
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw, api(gw) as client:
        await send_raw(gw, _message())
        [event] = capture_handlers.SEEN
        paths = [Path(a["path"]) for a in event["attachments"]]
        assert [a["filename"] for a in event["attachments"]] == ["report.pdf", "authorized keys"]
        assert all("content" not in a for a in event["attachments"])
        assert [p.read_bytes() for p in paths] == [PDF, BLOB]
        assert [a["size"] for a in event["attachments"]] == [len(PDF), len(BLOB)]
        folder = paths[0].parent
        assert folder.name == event["id"] and all(p.parent == folder for p in paths)
        assert folder.parent.parent == temp_dir  # <temp_dir>/mailgate-<store>/<id>/
        assert [p.name for p in paths] == ["0-report.pdf", "1-authorized_keys"]
        assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o600}
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700

        assert (await client.delete(f"/inbox/{event['id']}")).status_code == 200
        assert not folder.exists()
        assert _files(temp_dir) == []


async def test_files_go_after_cleanup_after_and_the_message_stays(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    smtp = _tempfile(tmp_path / "att", cleanup_after=0.5)
    async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as client:
        await send_raw(gw, _message())
        paths = [Path(a["path"]) for a in capture_handlers.SEEN[0]["attachments"]]
        assert all(p.exists() for p in paths)
        await _gone(paths)
        assert [m["subject"] for m in (await client.get("/inbox")).json()["items"]] == [
            "two attachments"
        ]


async def test_files_of_pruned_and_cleared_messages_go_with_them(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    smtp = _tempfile(tmp_path / "att")
    async with (
        start_gateway(Mode.DEV, smtp=smtp, inbox={"max_messages": 1}) as gw,
        api(gw) as client,
    ):
        await send_raw(gw, _message("first"))
        await send_raw(gw, _message("second"))  # prunes the first from the inbox
        first, second = ([Path(a["path"]) for a in e["attachments"]] for e in capture_handlers.SEEN)
        await _gone(first)  # at once, not at the next periodic sweep (a minute)
        assert all(p.exists() for p in second)

        assert (await client.delete("/inbox")).json() == {"deleted": 1}
        assert _files(tmp_path / "att") == []


async def test_a_message_a_handler_refused_leaves_no_files(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    crash = "tests.integration.capture_handlers:crash"
    smtp = {**_tempfile(tmp_path / "att"), "handlers": [KEEP, crash]}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        assert gw.smtp_address is not None
        address = gw.smtp_address

        def send() -> int:
            with smtplib.SMTP(*address, timeout=20) as client:
                try:
                    client.sendmail("a@example.com", ["b@example.com"], _message())
                except smtplib.SMTPDataError as exc:
                    return exc.smtp_code
                return 250

        assert await asyncio.to_thread(send) == 451
        [event] = capture_handlers.SEEN  # the first handler saw the files, then they went
        assert len(event["attachments"]) == 2
        assert _files(tmp_path / "att") == []


async def test_the_sweep_leaves_other_stores_files_until_they_are_old_and_others_alone(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    temp_dir, capture_id = tmp_path / "att", "01890a5d-ac96-774b-bcce-b302099a8057"
    other = temp_dir / "mailgate-0123456789abcdef" / capture_id
    other.mkdir(parents=True)
    (other / "0-x.txt").write_bytes(b"another gateway's")
    unrelated = temp_dir / "notes" / capture_id
    unrelated.mkdir(parents=True)
    (unrelated / "keep.txt").write_bytes(b"not ours")
    async with start_gateway(Mode.DEV, smtp=_tempfile(temp_dir)) as gw:
        assert gw.inbox.files is not None
        existing = gw.inbox.store.existing
        assert await gw.inbox.files.sweep(existing) == 0  # its inbox is not this one's
        hour_ago = other.stat().st_mtime - 3601
        os.utime(other, (hour_ago, hour_ago))
        os.utime(unrelated, (hour_ago, hour_ago))
        assert await gw.inbox.files.sweep(existing) == 1
    assert not other.exists() and (unrelated / "keep.txt").exists()


async def test_memory_mode_hands_over_content_and_writes_no_file(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    storage = {"mode": "memory", "temp_dir": str(tmp_path / "att")}
    smtp = {"handlers": [KEEP], "attachment_storage": storage}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw:
        assert gw.inbox.files is None
        await send_raw(gw, _message())
    [event] = capture_handlers.SEEN
    assert [base64.b64decode(a["content"]) for a in event["attachments"]] == [PDF, BLOB]
    assert all("path" not in a for a in event["attachments"])
    assert not (tmp_path / "att").exists()


@pytest.mark.parametrize(
    ("index", "filename", "expected"),
    [
        (0, "report.pdf", "0-report.pdf"),
        (1, "../../etc/passwd", "1-etc_passwd"),
        (2, "/abs/..", "2-abs"),
        (3, None, "3-attachment"),
        (4, "..", "4-attachment"),
        (5, "Grüße 你好.txt", "5-Gr_e_.txt"),
        (6, "a\\b\x00c.bin", "6-a_b_c.bin"),
        (7, "x" * 300 + ".pdf", "7-" + "x" * 96 + ".pdf"),
    ],
)
def test_file_names_are_never_paths(index: int, filename: str | None, expected: str) -> None:
    assert file_name(index, filename) == expected
