"""``mailgate dev`` started as a user starts it (a first start: it makes its certificate)
has loaded no web stack and no httpx until its first HTTP request other than a health
probe (mailgate.web.probes), which then builds the web app (mailgate.web.lazy) and is
answered. The CLI runs in a subprocess whose second
thread reads the banner, looks at ``sys.modules``, sends one request over a plain socket
(httpx would load itself) and stops the server with SIGINT, as Ctrl-C does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import Workspace, dev_args

pytestmark = pytest.mark.e2e

#: the web stack and httpx (built on the first request), the certificate's cryptography
#: (a child process makes it), SQLAlchemy's ORM and asyncio layer (SQLite runs on the
#: synchronous engine in threads). Not PostgreSQL's dialect: Alembic, which migrates the
#: new store of a first start, loads every dialect it knows.
NOT_AT_START = (
    "fastapi", "starlette", "jinja2", "httpx", "cryptography", "aiosqlite", "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
)  # fmt: skip

SCRIPT = r"""
import io, json, os, re, signal, socket, sys, threading, time

banner, real = io.StringIO(), sys.stdout

class Tee:
    def write(self, text):
        banner.write(text)
        return real.write(text)

    def flush(self):
        real.flush()

def loaded():
    return sorted({n for n in NOT_AT_START for m in list(sys.modules)
                   if m == n or m.startswith(n + ".")})

def get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Connection: close\r\n\r\n")
        answer = b"".join(iter(lambda: conn.recv(65536), b""))
    status, _, rest = answer.partition(b"\r\n")
    return {"status": status.decode(), "body": rest.partition(b"\r\n\r\n")[2].decode()}

def first_request():
    deadline = time.monotonic() + 30
    while "inbox has" not in banner.getvalue():  # the last line printed once started
        assert time.monotonic() < deadline, banner.getvalue()
        time.sleep(0.05)
    port = int(re.search(r"web http://127\.0\.0\.1:(\d+)", banner.getvalue())[1])
    before = loaded()
    probe = get(port, "/healthz")  # a health probe is answered without the web app
    after_probe = loaded()
    inbox = get(port, "/api/v1/inbox")
    result = {"before": before, "after_probe": after_probe, "after": loaded(),
              "probe": probe, "inbox": inbox}
    real.write("RESULT " + json.dumps(result) + "\n")
    real.flush()
    os.kill(os.getpid(), signal.SIGINT)

NOT_AT_START = json.loads(sys.argv.pop(1))
sys.stdout = Tee()
threading.Thread(target=first_request, daemon=True).start()
from mailgate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_dev_loads_the_web_stack_at_its_first_request(workspace: Workspace) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(NOT_AT_START), *dev_args(workspace)],
        cwd=workspace.root,
        env=workspace.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["before"] == result["after_probe"] == [], result
    assert result["probe"]["status"] == "HTTP/1.1 200 OK", result
    assert json.loads(result["probe"]["body"]) == {"status": "ok", "mode": "dev"}
    assert result["inbox"]["status"] == "HTTP/1.1 200 OK", result
    assert json.loads(result["inbox"]["body"])["items"] == []
    assert {"fastapi", "starlette", "jinja2"} <= set(result["after"])  # it built the app
