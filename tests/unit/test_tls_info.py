"""The dev certificate is made, and checked when its facts are not known, by a child
process: the capture server never loads ``cryptography`` (about 16 MiB for its whole
life). A kept certificate is checked from its facts beside it, bound to its SHA-256,
without a child; facts written for another certificate are not believed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailgate.errors import ConfigError
from mailgate.ingest import tls

CHECK = """
import sys
from pathlib import Path
from mailgate.ingest.tls import self_signed
self_signed(Path(sys.argv[1]), "localhost")
print("cryptography" in sys.modules)
"""


def _imports_cryptography(directory: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(directory)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip() == "True"


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The child processes self_signed runs (run for real)."""
    seen: list[list[str]] = []
    real = subprocess.run

    def spy(args: list[str], **kwargs: Any) -> Any:
        seen.append(args)
        return real(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    return seen


def test_the_caller_never_loads_cryptography(tmp_path: Path) -> None:
    assert not _imports_cryptography(tmp_path)  # made, by a child
    first = (tmp_path / tls.CERT_FILE).read_bytes()
    assert first.startswith(b"-----BEGIN CERTIFICATE-----")
    assert not _imports_cryptography(tmp_path)  # kept
    assert (tmp_path / tls.CERT_FILE).read_bytes() == first


def test_a_kept_certificate_is_checked_without_a_child(
    tmp_path: Path, children: list[list[str]]
) -> None:
    tls.self_signed(tmp_path, "localhost")
    assert len(children) == 1  # made
    first = (tmp_path / tls.CERT_FILE).read_bytes()
    tls.self_signed(tmp_path, "localhost")
    assert len(children) == 1  # its facts were enough
    assert (tmp_path / tls.CERT_FILE).read_bytes() == first


def test_facts_of_another_certificate_are_not_believed(
    tmp_path: Path, children: list[list[str]]
) -> None:
    tls.self_signed(tmp_path, "localhost")
    info = tmp_path / tls.INFO_FILE
    digest, _, rest = info.read_text().partition("\n")
    info.write_text("0" * len(digest) + "\n" + rest.replace("localhost", "other.test"))
    first = (tmp_path / tls.CERT_FILE).read_bytes()
    tls.self_signed(tmp_path, "localhost")
    assert len(children) == 2  # the certificate itself was read again
    assert info.read_text().startswith(digest)  # and its true facts written back
    assert (tmp_path / tls.CERT_FILE).read_bytes() == first  # it still does
    tls.self_signed(tmp_path, "mx.example.test")  # a name it lacks: a new certificate
    assert (tmp_path / tls.CERT_FILE).read_bytes() != first


def test_a_child_that_fails_says_why(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cannot make a self-signed certificate in .*a-file: "):
        tls.self_signed(blocked, "localhost")
