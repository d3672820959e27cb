"""TLS on the SMTP server (issue 9): STARTTLS and implicit TLS, with the certificate
``mailgate dev`` makes for itself or one the operator configures, checked by smtplib
clients that verify it."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
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
