"""TLS on the SMTP server (issue 9): STARTTLS and implicit TLS, with the certificate
``mailgate dev`` makes for itself or one the operator configures, checked by smtplib
clients that verify it."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import struct
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailgate.app import Gateway, Mode
from mailgate.errors import ConfigError
from mailgate.ingest.tls import self_signed
from tests.integration.conftest import api, fast_settings

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: over TLS\r\n\r\nhello\r\n"


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mailgate's data directory for this test (platformdirs honours XDG_DATA_HOME)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "mailgate"


def _verifying(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def _starttls(address: tuple[str, int], cert: Path) -> tuple[bool, str | None, object]:
    """EHLO (STARTTLS offered?), STARTTLS with verification, send: (offered, the TLS
    version, the reply to DATA)."""
    with smtplib.SMTP(*address, timeout=20) as smtp:
        smtp.ehlo()
        offered = smtp.has_extn("starttls")
        smtp.starttls(context=_verifying(cert))
        version = smtp.sock.version() if isinstance(smtp.sock, ssl.SSLSocket) else None
        smtp.ehlo()
        reply = smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        return offered, version, reply


def _implicit(address: tuple[str, int], cert: Path) -> tuple[bool, object]:
    with smtplib.SMTP_SSL(*address, timeout=20, context=_verifying(cert)) as smtp:
        smtp.ehlo()
        return smtp.has_extn("starttls"), smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)


async def test_dev_offers_starttls_and_implicit_tls_with_a_certificate_it_keeps(
    db_url: str, data_home: Path
) -> None:
    settings = fast_settings(db_url, smtp={"tls_port": 0})
    async with Gateway(settings, mode=Mode.DEV) as gw, api(gw) as client:
        cert = data_home / "tls" / "cert.pem"
        assert gw.smtp_address is not None and gw.smtps_address is not None
        offered, version, refused = await asyncio.to_thread(_starttls, gw.smtp_address, cert)
        assert offered and version in ("TLSv1.2", "TLSv1.3") and refused == {}
        again, refused = await asyncio.to_thread(_implicit, gw.smtps_address, cert)
        assert not again and refused == {}  # no STARTTLS inside TLS
        captured = (await client.get("/inbox")).json()["items"]
    assert [m["subject"] for m in captured] == ["over TLS", "over TLS"]
    key = data_home / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    first = cert.read_bytes()
    async with Gateway(settings, mode=Mode.DEV):
        pass
    assert cert.read_bytes() == first  # made once, kept


async def test_a_configured_certificate_is_used_and_none_is_made(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    cert, key = self_signed(tmp_path / "tls", "mx.example.test")
    with_tls = fast_settings(db_url, smtp={"tls_cert": cert, "tls_key": key, "tls_port": 0})
    async with Gateway(with_tls, mode=Mode.DEV) as gw:
        assert gw.smtp_address is not None and gw.smtps_address is not None
        offered, _, refused = await asyncio.to_thread(_starttls, gw.smtp_address, cert)
        assert offered and refused == {}
    assert not (tmp_path / "data" / "mailgate" / "tls").exists()  # none made


def test_a_certificate_without_its_key_is_refused(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"tls_cert and smtp\.tls_key go together"):
        fast_settings(db_url, smtp={"tls_cert": tmp_path / "cert.pem"})


async def test_a_certificate_that_does_not_load_is_named(db_url: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    settings = fast_settings(db_url, smtp={"tls_cert": cert, "tls_key": key})
    with pytest.raises(ConfigError, match=r"cert\.pem"):
        async with Gateway(settings, mode=Mode.DEV):
            pass


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a client that vanishes does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _starttls_then_vanish(address: tuple[str, int]) -> None:
    """EHLO, STARTTLS, its 220, then gone before the handshake: no TLS octet sent."""
    sock = socket.create_connection(address, timeout=10)
    replies = sock.makefile("rb")
    replies.readline()
    sock.sendall(b"EHLO client.test\r\nSTARTTLS\r\n")
    while not (line := replies.readline()).startswith(b"220"):
        assert line.startswith(b"250"), line
    _reset(sock)


def _greeting(address: tuple[str, int], cert: Path | None = None) -> bytes:
    """The server's first line, over TLS from the start when ``cert`` is given."""
    sock = socket.create_connection(address, timeout=10)
    if cert is not None:
        sock = _verifying(cert).wrap_socket(sock, server_hostname="localhost")
    with sock:
        return sock.makefile("rb").readline()


async def test_a_failed_starttls_handshake_gives_its_slot_back(
    db_url: str, data_home: Path
) -> None:
    """asyncio tells a protocol nothing of a transport whose TLS handshake failed: each
    client that vanished after STARTTLS kept a slot for ever, and ``max_connections`` of
    them turned every later client away with 421."""
    settings = fast_settings(db_url, smtp={"max_connections": 2})
    async with Gateway(settings, mode=Mode.DEV) as gw:
        assert gw.smtp_address is not None
        for _ in range(3):
            await asyncio.to_thread(_starttls_then_vanish, gw.smtp_address)
            await _until_no_session(gw)
        assert (await asyncio.to_thread(_greeting, gw.smtp_address)).startswith(b"220 ")


async def _until_no_session(gw: Gateway) -> None:
    for _ in range(200):
        if not _sessions(gw):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(_sessions(gw))} session(s) still open")


async def test_handshakes_on_the_implicit_tls_port_hold_a_slot(
    db_url: str, data_home: Path
) -> None:
    """A connection to the implicit-TLS port counts against ``max_connections`` from its
    accept, not from the end of its handshake: clients that connect and send nothing
    cannot open descriptors past the limit. One whose handshake fails gives its slot back."""
    settings = fast_settings(db_url, smtp={"tls_port": 0, "max_connections": 2})
    async with Gateway(settings, mode=Mode.DEV) as gw:
        assert gw.smtp_address is not None and gw.smtps_address is not None
        cert = data_home / "tls" / "cert.pem"
        silent = [socket.create_connection(gw.smtps_address) for _ in range(2)]
        try:
            for _ in range(200):
                if len(_sessions(gw)) == 2:
                    break
                await asyncio.sleep(0.01)
            greeting = await asyncio.to_thread(_greeting, gw.smtp_address)
            assert greeting.startswith(b"421 4.7.0"), greeting
        finally:
            for sock in silent:
                sock.sendall(b"not a TLS hello\r\n")  # a failed handshake
                _reset(sock)
        await _until_no_session(gw)
        assert (await asyncio.to_thread(_greeting, gw.smtps_address, cert)).startswith(b"220 ")


def _sessions(gw: Gateway) -> set[object]:
    """The SMTP listeners' open sessions (both listeners share one set)."""
    server = gw._smtp_server
    assert server is not None
    return set(server.sessions)
