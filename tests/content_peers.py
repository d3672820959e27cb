"""Real peers for the content tests: a small HTTP(S) file server on 127.0.0.1, and keys.

``FileServer`` answers, on a real socket in a thread:

* ``/file/N``      N bytes (``Content-Length`` given)
* ``/stream/N``    N bytes without a length (read until the server closes)
* ``/declared/N``  a ``Content-Length: N`` header and only a few bytes
* ``/gzip/N``      N zero bytes, gzip-compressed (``Content-Encoding: gzip``)
* ``/status/C``    status C
* ``/redirect?to=URL``  ``302 Location: URL``
* ``/loop``        ``302 Location: /loop``

and records the ``Host`` header of every request.
"""

from __future__ import annotations

import base64
import datetime
import ssl
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["FileServer", "body", "rsa_key_pair", "tls_pair"]


def body(size: int) -> bytes:
    """The bytes the server sends for a size: a recognisable pattern."""
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host", ""))
        parts = urlsplit(self.path)
        kind, _, arg = parts.path.strip("/").partition("/")
        if kind == "redirect":
            self._reply(302, b"", {"Location": parse_qs(parts.query)["to"][0]})
        elif kind == "loop":
            self._reply(302, b"", {"Location": "/loop"})
        elif kind == "status":
            self._reply(int(arg), b"status", {})
        elif kind == "file":
            self._reply(200, body(int(arg)), {})
        elif kind == "declared":
            self._reply(200, b"short", {"Content-Length": arg})
        elif kind == "stream":
            self._stream(int(arg))
        elif kind == "gzip":
            self._reply(200, _gzipped_zeros(int(arg)), {"Content-Encoding": "gzip"})
        else:
            self._reply(404, b"no such route", {})

    def _reply(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(content)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def _stream(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        data = body(size)
        try:
            for start in range(0, size, 65536):
                self.wfile.write(data[start : start + 65536])
        except OSError:  # the client stopped reading past its limit: expected
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def _gzipped_zeros(size: int) -> bytes:
    """``size`` zero bytes in gzip (about a thousandth of it), made a MiB at a time."""
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    mib, parts = bytes(1 << 20), []
    for start in range(0, size, len(mib)):
        parts.append(gzip.compress(mib[: size - start]))
    return b"".join([*parts, gzip.flush()])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hosts: list[str]


class FileServer:
    """``with FileServer() as server:`` then fetch ``server.url("/file/10")``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hosts = []
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def hosts(self) -> list[str]:
        return self._server.hosts

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def tls_pair(directory: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for ``name`` and a client context
    trusting exactly that certificate (hostname checked)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def rsa_key_pair() -> tuple[str, str]:
    """A 2048-bit RSA key: (PEM private key, the ``p=`` base64 of its public key for DNS)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode("ascii")
