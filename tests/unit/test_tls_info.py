"""The dev certificate is checked at start without ``cryptography`` (its facts are kept
beside it, bound to its SHA-256), and facts written for another certificate are not
believed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_a_kept_certificate_is_checked_without_cryptography(tmp_path: Path) -> None:
    assert _imports_cryptography(tmp_path)  # made: needs it
    first = (tmp_path / tls.CERT_FILE).read_bytes()
    assert not _imports_cryptography(tmp_path)  # kept: does not
    assert (tmp_path / tls.CERT_FILE).read_bytes() == first


def test_facts_of_another_certificate_are_not_believed(tmp_path: Path) -> None:
    tls.self_signed(tmp_path, "localhost")
    info = tmp_path / tls.INFO_FILE
    digest, _, rest = info.read_text().partition("\n")
    info.write_text("0" * len(digest) + "\n" + rest.replace("localhost", "other.test"))
    assert _imports_cryptography(tmp_path)  # read the certificate itself again
    assert info.read_text().startswith(digest)  # and wrote its true facts back
    first = (tmp_path / tls.CERT_FILE).read_bytes()
    tls.self_signed(tmp_path, "mx.example.test")  # a name it lacks: a new certificate
    assert (tmp_path / tls.CERT_FILE).read_bytes() != first
