"""TLS for the SMTP server: STARTTLS (RFC 3207) and implicit TLS (RFC 8314).

The certificate and key come from the settings (``smtp.tls_cert``, ``smtp.tls_key``, PEM
files). ``mailgate dev`` with none configured makes a self-signed certificate once and
keeps it in its data directory (``tls/cert.pem``, ``tls/key.pem``, the key readable only
by its owner), valid for ``localhost``, 127.0.0.1, ::1 and the SMTP hostname, so an
application that insists on TLS can talk to the capture server: point it at the
certificate, or turn its verification off for development.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

from mailgate.errors import ConfigError

__all__ = ["CERT_FILE", "KEY_FILE", "self_signed", "server_context"]

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
#: what the certificate says, for the next start to check without ``cryptography``
#: (~10 MiB of memory that only making or reading a certificate needs): its SHA-256, its
#: expiry and its DNS names, one a line
INFO_FILE = "cert.info"
_VALID_DAYS = 825  #: the longest validity clients accept for a server certificate
_RENEW_BEFORE = dt.timedelta(days=30)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context of TLS 1.2 or newer with ``cert`` and ``key``, or ConfigError
    naming the file that would not load."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"smtp TLS certificate {cert} with key {key}: {exc}") from None
    return context


def self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """``(cert, key)`` in ``directory``: the ones there, or new ones when there are none,
    they will expire within a month, or they do not name ``hostname``.

    Making or reading a certificate takes ``cryptography``, about 11 MiB that would stay
    in a capture server for its whole life to be used once: a short-lived child process
    does it (:func:`ensure`), and this one reads what it wrote in :data:`INFO_FILE`.
    """
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if _usable(cert_path, key_path, hostname, inspect=False):
        return cert_path, key_path
    child = subprocess.run(  # noqa: S603 (this interpreter, a path and a hostname; no shell)
        [sys.executable, "-m", "mailgate.ingest.tls", str(directory), hostname],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0 or not _usable(cert_path, key_path, hostname, inspect=False):
        reason = child.stderr.strip().splitlines()[-1:] or ["no certificate was written"]
        raise ConfigError(f"cannot make a self-signed certificate in {directory}: {reason[0]}")
    return cert_path, key_path


def ensure(directory: Path, hostname: str) -> None:
    """What :func:`self_signed` has a child process do: look at the certificate in
    ``directory`` (writing :data:`INFO_FILE`) and make a new one if it will not do."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if _usable(cert_path, key_path, hostname, inspect=True):
        return
    directory.mkdir(parents=True, exist_ok=True)
    # two processes starting at once must not leave one's key beside the other's cert
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(cert_path, key_path, hostname, inspect=True):
            _make(cert_path, key_path, hostname)


def _make(cert_path: Path, key_path: Path, hostname: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(key_path, key_pem, 0o600)
    _write(cert_path, pem, 0o644)
    _inspect(cert_path, pem)


def _usable(cert_path: Path, key_path: Path, hostname: str, *, inspect: bool) -> bool:
    """Whether the certificate will do, by what :data:`INFO_FILE` says of exactly it, or,
    with ``inspect`` (the child), by reading it when that file says nothing of it."""
    try:
        pem = cert_path.read_bytes()
        key_path.stat()
    except OSError:
        return False
    facts = _read_info(cert_path.with_name(INFO_FILE), pem)
    if facts is None and inspect:
        facts = _inspect(cert_path, pem)
    if facts is None:
        return False
    not_after, names = facts
    return not_after - dt.datetime.now(dt.UTC) >= _RENEW_BEFORE and hostname in names


def _read_info(path: Path, pem: bytes) -> tuple[dt.datetime, list[str]] | None:
    """The facts :func:`_inspect` wrote for exactly this certificate, if it did."""
    try:
        digest, not_after, *names = path.read_text(encoding="ascii").split("\n")
        if digest != hashlib.sha256(pem).hexdigest():
            return None  # written for another certificate
        return dt.datetime.fromisoformat(not_after), [n for n in names if n]
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _inspect(cert_path: Path, pem: bytes) -> tuple[dt.datetime, list[str]] | None:
    """Expiry and DNS names read with ``cryptography``, kept in :data:`INFO_FILE`."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem)
        found = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    not_after, names = cert.not_valid_after_utc, found.get_values_for_type(x509.DNSName)
    info = "\n".join([hashlib.sha256(pem).hexdigest(), not_after.isoformat(), *names])
    with contextlib.suppress(OSError, UnicodeEncodeError):  # if not: inspected next time
        _write(cert_path.with_name(INFO_FILE), info.encode("ascii") + b"\n", 0o644)
    return not_after, names


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written whole under a temporary name, then renamed: never half a key."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)
    temporary.replace(path)


if __name__ == "__main__":  # self_signed's child: python -m mailgate.ingest.tls DIR HOSTNAME
    ensure(Path(sys.argv[1]), sys.argv[2])
