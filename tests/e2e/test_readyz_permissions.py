"""``/readyz`` turns 503 naming the store when the SQLite file's permissions shut the
running gateway out (issue 7): ``chmod 000`` on the file, as a mistaken ``chown``/``chmod``
or a restore with the wrong owner leaves it.

Root reads a mode-000 file all the same (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``),
and CI runs as root. So under root the gateway is started by util-linux's ``setpriv``
with those two capabilities dropped from its bounding set before ``exec``: still uid 0,
but held to file modes like any user. (Switching to ``nobody`` would not do here: the
interpreter lives under ``/root``, which ``nobody`` cannot enter.) Not root, a plain
``chmod`` is enough and the gateway runs as the test does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MAILGATE, SyncMailgate, Workspace

pytestmark = pytest.mark.e2e

#: the capabilities that let root read and search whatever the file modes say
DAC_CAPABILITIES = {"dac_override": 1, "dac_read_search": 2}


def bound_by_file_modes() -> list[str]:
    """What to run mailgate under so that ``chmod 000`` stops it reading a file."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "as root this test needs setpriv (Debian package util-linux)"
    drop = ",".join(f"-{name}" for name in DAC_CAPABILITIES)
    return [setpriv, "--bounding-set", drop, "--"]


def effective_capabilities(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("CapEff:")]
    return int(line.split()[1], 16)


def _serve_bound_by_file_modes(workspace: Workspace) -> SyncMailgate:
    """``mailgate serve`` on the workspace's database, held to its file modes, ready."""
    out, err = workspace.root / "mailgate.out", workspace.root / "mailgate.err"
    command = [*bound_by_file_modes(), *MAILGATE, "serve", "--http", "127.0.0.1:0",
               "--db", str(workspace.db)]  # fmt: skip
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            command, cwd=workspace.root, env=workspace.environ(), stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    mg = SyncMailgate(proc, out, err)
    try:
        mg.wait_ready()
    except BaseException:
        mg.kill()
        raise
    return mg


def test_readyz_is_503_when_the_database_file_is_not_readable(workspace: Workspace) -> None:
    mg = _serve_bound_by_file_modes(workspace)
    try:
        if os.geteuid() == 0:  # the gateway really is held to file modes
            for name, bit in DAC_CAPABILITIES.items():
                assert not effective_capabilities(mg.proc.pid) & (1 << bit), name
        mode = workspace.db.stat().st_mode
        with httpx.Client(base_url=mg.web, timeout=10) as client:
            assert client.get("/readyz").json()["checks"]["store"] == "ok"
            workspace.db.chmod(0)
            try:
                shut_out = client.get("/readyz")
                alive = client.get("/healthz")
            finally:
                workspace.db.chmod(mode)
            readable_again = client.get("/readyz")
    finally:
        mg.kill()

    assert shut_out.status_code == 503, mg.output()
    assert shut_out.json() == {
        "status": "not ready",
        "checks": {
            "store": "unreachable (database file: Permission denied)",
            "dispatcher": "ok",
            "webhooks": "ok",
        },
    }
    assert alive.status_code == 200  # alive all the same
    assert readable_again.status_code == 200, readable_again.text


def test_readyz_is_503_when_the_database_file_is_read_only(workspace: Workspace) -> None:
    """A file left read-only (``chmod 444``, a restore with the wrong mode) was ready by
    /readyz, which only read from it, while every submission was refused: a gateway
    started on it answered 503 to each POST and 451 to each message, and said ready."""
    message = {"from": "app@example.com", "to": "you@example.com", "subject": "s", "text": "t"}
    mg = _serve_bound_by_file_modes(workspace)  # makes the database
    mg.kill()
    workspace.db.chmod(0o444)
    mg = _serve_bound_by_file_modes(workspace)
    try:
        with httpx.Client(base_url=mg.web, timeout=10) as client:
            refused = client.post("/api/v1/messages", json=message)
            ready = client.get("/readyz")
    finally:
        mg.kill()

    assert refused.status_code == 503, refused.text
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["store"] == "read-only (database file: Permission denied)"
