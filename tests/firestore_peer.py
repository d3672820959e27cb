"""The official Firestore emulator as a real peer (shared/PEERS.md).

The JVM is started directly, in a process group of its own, so stopping it stops
everything it started (killing ``gcloud`` would leave the JVM running). It is part of
the machine image and cannot be installed from the registries here: a test that needs
it and finds it missing fails with the reason, it is not skipped.

Fixtures (import them where they are used, or into ``tests/conftest.py``):

* ``firestore_emulator`` — one emulator per session (per xdist worker), an
  :class:`Emulator`: ``host``, ``project``, ``reset()``, ``await restart()``;
* ``firestore`` (also as ``firestore_client``) — per test: the database emptied,
  ``FIRESTORE_EMULATOR_HOST`` and ``GOOGLE_CLOUD_PROJECT`` set, and an
  ``AsyncClient`` with anonymous credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from google.api_core import exceptions as google_errors
from google.api_core.retry import if_exception_type
from google.api_core.retry_async import AsyncRetry
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore as firestore_module

__all__ = [
    "JAR",
    "PROJECT",
    "WRITE_RETRY",
    "Emulator",
    "firestore",
    "firestore_client",
    "firestore_emulator",
]

JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
PROJECT = "demo-test"
START_TIMEOUT = 60.0  #: seconds; it is ready in 2–5 s on an idle machine

#: for the tests' own batch writes (``batch.commit(retry=WRITE_RETRY)``): the emulator now
#: and then fails a commit with CANCELLED ("call already cancelled", a Java server error)
#: when a listener's stream ends while the commit notifies it; a set is safe to repeat
WRITE_RETRY = AsyncRetry(
    predicate=if_exception_type(google_errors.Cancelled, google_errors.ServiceUnavailable),
    initial=0.1,
    maximum=1.0,
    timeout=30.0,
)


class Emulator:
    """One emulator JVM on a fixed loopback port; ``start()``/``stop()`` may repeat."""

    project = PROJECT

    def __init__(self, java: str, jar: Path, workdir: Path) -> None:
        self.java, self.jar, self.workdir = java, jar, workdir
        self.port = _free_port()
        self.log = workdir / "emulator.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the value of ``FIRESTORE_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> None:
        """Start the JVM and wait until ``GET /`` answers ``Ok``."""
        command = [self.java, "-Duser.language=en", "-cp", str(self.jar), MAIN_CLASS, "start",
                   "--host=127.0.0.1", f"--port={self.port}"]  # fmt: skip
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self._process.returncode}: "
                                   f"{self._log_tail()}")  # fmt: skip
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url, timeout=1.0).text.strip() == "Ok":
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the emulator did not answer in {START_TIMEOUT:.0f} s: {self._log_tail()}"
        )

    def stop(self) -> None:
        """Stop the whole process group: TERM, then KILL after 10 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    async def restart(self) -> None:
        """Stop and start again on the same port (everything stored is forgotten)."""
        await asyncio.to_thread(self._restart)

    def _restart(self) -> None:
        self.stop()
        self.start()

    def reset(self) -> None:
        """Delete every document of the project's default database."""
        url = f"{self.url}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        httpx.delete(url, timeout=10.0).raise_for_status()

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError as exc:
            return f"(no log: {exc})"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[Emulator]:
    """The emulator for this session (each xdist worker starts its own)."""
    java = shutil.which("java")
    if not JAR.is_file() or java is None:
        missing = [f"the emulator jar {JAR}" if not JAR.is_file() else "",
                   "java (Java 17) on PATH" if java is None else ""]  # fmt: skip
        pytest.fail(
            f"Firestore emulator tests need {' and '.join(m for m in missing if m)}: they are"
            " part of the machine image (Google Cloud CLI with cloud-firestore-emulator,"
            " openjdk-17); see shared/PEERS.md",
            pytrace=False,
        )
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-firestore-"))
    emulator = Emulator(java, JAR, workdir)
    try:
        emulator.start()
    except RuntimeError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the Firestore emulator did not start: {exc}", pytrace=False)
    try:
        yield emulator
    finally:
        emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _client(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[firestore_module.AsyncClient]:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", emulator.project)
    await asyncio.to_thread(emulator.reset)
    client = firestore_module.AsyncClient(
        project=emulator.project, credentials=AnonymousCredentials()
    )
    try:
        yield client
    finally:
        await client._firestore_api.transport.close()  # the grpc.aio channel


@pytest.fixture
async def firestore(
    firestore_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[firestore_module.AsyncClient]:
    """An empty database and a client for it; the environment points at the emulator."""
    async with _client(firestore_emulator, monkeypatch) as client:
        yield client


@pytest.fixture
async def firestore_client(
    firestore_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[firestore_module.AsyncClient]:
    """The same as ``firestore``, under the name the gateway's tests use."""
    async with _client(firestore_emulator, monkeypatch) as client:
        yield client
