"""swaks authenticating to ``mailgate dev`` with CRAM-MD5 (RFC 2195; issue 9): taken and
recorded without a password. swaks needs perl's Digest::HMAC_MD5 for it (.ci/run installs
libdigest-hmac-perl)."""

from __future__ import annotations

import hmac
import shutil
import subprocess

import httpx
import pytest

from tests.e2e.conftest import StartSync, Workspace, dev_args

pytestmark = pytest.mark.e2e


def test_swaks_cram_md5_is_recorded_with_challenge_and_response(
    mailgate: StartSync, workspace: Workspace
) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks is not installed (.ci/run installs it)"
    mg = mailgate(*dev_args(workspace))
    assert mg.smtp_port is not None
    command = [swaks, "--server", "127.0.0.1", "--port", str(mg.smtp_port),
               "--from", "app@example.com", "--to", "you@example.com",
               "--auth", "CRAM-MD5", "--auth-user", "app", "--auth-password", "s3cret",
               "--header", "Subject: cram"]  # fmt: skip
    sent = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert " -> AUTH CRAM-MD5" in sent.stdout and "<-  235 " in sent.stdout, sent.stdout

    with httpx.Client(base_url=mg.web, timeout=10) as http:
        [item] = http.get("/api/v1/inbox").json()["items"]
        auth = http.get(f"/api/v1/inbox/{item['id']}").json()["authentication"]
    assert (auth["mechanism"], auth["username"], auth["password"]) == ("CRAM-MD5", "app", None)
    assert auth["response"] == hmac.new(b"s3cret", auth["challenge"].encode(), "md5").hexdigest()
