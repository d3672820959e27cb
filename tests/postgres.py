"""A real, throwaway PostgreSQL cluster (shared/PEERS.md): initdb in a temp dir, pg_ctl."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

__all__ = ["postgres_cluster"]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(
            f"PostgreSQL server binary {name!r} not found: install the Debian package "
            "'postgresql' (the CI script does)"
        )
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yield ``postgresql://postgres@127.0.0.1:PORT/postgres``; stop and delete it afterwards."""
    workdir = tempfile.mkdtemp(prefix="mailgate-pg-")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(workdir, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = f"{workdir}/data", _free_port()
    run = subprocess.run
    try:
        run(
            [*as_postgres, _bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        run(
            [
                *as_postgres,
                _bin("pg_ctl"),
                "-D",
                data,
                "-w",
                "-l",
                f"{workdir}/log",
                "-o",
                f"-k {workdir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(
            [*as_postgres, _bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(workdir, ignore_errors=True)
