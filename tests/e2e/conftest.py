"""Run the real ``mailgate`` CLI in a subprocess, as a user would.

Every server is started with ``--http``/``--smtp`` on port 0 (the banner line
tells the port), a SQLite file under ``tmp_path``, HOME/XDG_* pointing into
``tmp_path``, and its own process group, which the fixture teardown kills.
stdout and stderr go to files (no pipe can fill up and stall the server); the
banner and the "stopped" line are read from the stdout file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest

from mailgate.legacy_env import LEGACY_NAMES

MAILGATE = (sys.executable, "-m", "mailgate")
START_TIMEOUT = 30.0  #: upper bound for a server to print its banner and answer /healthz
STOP_TIMEOUT = 30.0  #: upper bound for a server to exit after a signal
CLI_TIMEOUT = 60.0  #: upper bound for a one-shot command (help, send, config)

BANNER = re.compile(
    r"^mailgate (?P<mode>dev|serve): "
    r"(?:SMTP (?P<smtp_host>\S+):(?P<smtp_port>\d+), )?"
    r"web (?P<web_url>http://(?P<web_host>\S+):(?P<web_port>\d+)) "
    r"\(db (?P<db>[^\n]+)\)\n",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Workspace:
    """Where one test's mailgate processes live: cwd, HOME, data dir and database."""

    root: Path
    env: dict[str, str]

    @property
    def db(self) -> Path:
        return self.root / "mailgate.sqlite3"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra or {})
        return env


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    # Nothing from the developer's own mailgate configuration leaks in.
    # (nor the old agent's or the Trigger Email extension's names, which mailgate reads too)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MAILGATE_")
        and k not in LEGACY_NAMES
        and k not in ("FIRESTORE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")
    }
    env.update(
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
    )
    return Workspace(tmp_path, env)


class Mailgate:
    """One mailgate server process; the address fields are filled from its banner."""

    def __init__(self, pid: int, stdout_path: Path, stderr_path: Path) -> None:
        self.pid = pid
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.mode = ""
        self.printed_web_url = ""  #: the web URL exactly as the banner prints it
        self.web_host = ""
        self.web = ""  #: base URL the tests talk to (always loopback)
        self.smtp_port: int | None = None
        self.db = ""

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def banner(self) -> re.Match[str] | None:
        return BANNER.search(self.stdout())

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def _take_banner(self, match: re.Match[str]) -> None:
        self.mode = match["mode"]
        self.printed_web_url = match["web_url"]
        self.web_host = match["web_host"]
        loopback = "::1" if ":" in self.web_host else "127.0.0.1"
        host = f"[{loopback}]" if ":" in loopback else loopback
        self.web = f"http://{host}:{match['web_port']}"
        self.smtp_port = int(match["smtp_port"]) if match["smtp_port"] else None
        self.db = match["db"]

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class SyncMailgate(Mailgate):
    def __init__(self, proc: subprocess.Popen[bytes], stdout_path: Path, stderr_path: Path) -> None:
        super().__init__(proc.pid, stdout_path, stderr_path)
        self.proc = proc

    def wait(self, limit: float = STOP_TIMEOUT) -> int:
        return self.proc.wait(limit)

    def wait_ready(self, limit: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + limit
        while (match := self.banner()) is None:
            self._check_alive(deadline)
            time.sleep(0.05)
        self._take_banner(match)
        with httpx.Client(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    response = client.get(f"{self.web}/healthz")
                    if response.status_code == 200:
                        assert response.json()["mode"] == self.mode
                        return
                self._check_alive(deadline)
                time.sleep(0.05)

    def _check_alive(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"mailgate exited with {self.proc.returncode}\n{self.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"mailgate did not become ready in time\n{self.output()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self._kill_group()
        self.proc.wait(STOP_TIMEOUT)


class AsyncMailgate(Mailgate):
    def __init__(
        self, proc: asyncio.subprocess.Process, stdout_path: Path, stderr_path: Path
    ) -> None:
        super().__init__(proc.pid, stdout_path, stderr_path)
        self.proc = proc

    async def wait(self, limit: float = STOP_TIMEOUT) -> int:
        async with asyncio.timeout(limit):
            return await self.proc.wait()

    async def wait_ready(self, limit: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + limit
        while (match := self.banner()) is None:
            self._check_alive(deadline)
            await asyncio.sleep(0.05)
        self._take_banner(match)
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get(f"{self.web}/healthz")
                    if response.status_code == 200:
                        assert response.json()["mode"] == self.mode
                        return
                self._check_alive(deadline)
                await asyncio.sleep(0.05)

    def _check_alive(self, deadline: float) -> None:
        if self.proc.returncode is not None:
            raise AssertionError(f"mailgate exited with {self.proc.returncode}\n{self.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"mailgate did not become ready in time\n{self.output()}")

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self._kill_group()
        await self.wait()


class StartSync(Protocol):
    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> SyncMailgate: ...


class StartAsync(Protocol):
    async def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> AsyncMailgate: ...


class RunCli(Protocol):
    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def _log_paths(workspace: Workspace, n: int) -> tuple[Path, Path]:
    return workspace.root / f"mailgate-{n}.out", workspace.root / f"mailgate-{n}.err"


@pytest.fixture
def mailgate(workspace: Workspace) -> Iterator[StartSync]:
    """Start ``mailgate ARGS…`` (blocking API); every process is killed at teardown."""
    started: list[SyncMailgate] = []

    def start(*args: str, env: Mapping[str, str] | None = None, ready: bool = True) -> SyncMailgate:
        out, err = _log_paths(workspace, len(started))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*MAILGATE, *args],
                cwd=workspace.root,
                env=workspace.environ(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        mg = SyncMailgate(proc, out, err)
        started.append(mg)
        if ready:
            mg.wait_ready()
        return mg

    try:
        yield start
    finally:
        for mg in started:
            mg.kill()


@pytest.fixture
async def amailgate(workspace: Workspace) -> AsyncIterator[StartAsync]:
    """Start ``mailgate ARGS…`` with asyncio (for tests whose peers share the event loop)."""
    started: list[AsyncMailgate] = []

    async def start(
        *args: str, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> AsyncMailgate:
        out, err = _log_paths(workspace, len(started))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                *MAILGATE,
                *args,
                cwd=workspace.root,
                env=workspace.environ(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        mg = AsyncMailgate(proc, out, err)
        started.append(mg)
        if ready:
            await mg.wait_ready()
        return mg

    try:
        yield start
    finally:
        for mg in started:
            await mg.kill()


@pytest.fixture
def cli(workspace: Workspace) -> RunCli:
    """Run a one-shot ``mailgate`` command to completion and capture its output."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MAILGATE, *args],
            cwd=workspace.root,
            env=workspace.environ(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            start_new_session=True,
            check=False,
        )

    return run


def run_together(cli: RunCli, *commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several one-shot commands at the same time (each one costs a Python start-up)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda command: cli(*command), commands))


# --- API helpers ----------------------------------------------------------------------------

POLL_TIMEOUT = 20.0  #: upper bound for a message to reach an expected state


def wait_message(
    client: httpx.Client,
    message_id: str,
    done: Callable[[dict[str, Any]], bool] = lambda m: m["state"] == "sent",
    limit: float = POLL_TIMEOUT,
) -> dict[str, Any]:
    """Poll GET /api/v1/messages/{id} until ``done(message)``; return the message."""
    deadline = time.monotonic() + limit
    while True:
        response = client.get(f"/api/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        message: dict[str, Any] = response.json()
        if done(message):
            return message
        assert time.monotonic() < deadline, f"timed out; last seen: {message}"
        time.sleep(0.05)


async def await_messages(
    client: httpx.AsyncClient,
    message_ids: list[str],
    done: Callable[[dict[str, Any]], bool] = lambda m: m["state"] == "sent",
    limit: float = POLL_TIMEOUT,
) -> list[dict[str, Any]]:
    """Poll until ``done(message)`` holds for every id at the same time."""
    deadline = time.monotonic() + limit
    while True:
        messages: list[dict[str, Any]] = []
        for message_id in message_ids:
            response = await client.get(f"/api/v1/messages/{message_id}")
            assert response.status_code == 200, response.text
            messages.append(response.json())
        if all(done(m) for m in messages):
            return messages
        assert time.monotonic() < deadline, f"timed out; last seen: {messages}"
        await asyncio.sleep(0.05)


def dev_args(workspace: Workspace, *extra: str) -> tuple[str, ...]:
    """``dev`` on free loopback ports with the test's own database."""
    return (
        "dev",
        "--smtp",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--db",
        str(workspace.db),
        *extra,
    )


@pytest.fixture
async def pg_database(postgres_url: str) -> AsyncIterator[str]:
    """A database of its own on the session's PostgreSQL, for processes to share."""
    name = f"mg_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
