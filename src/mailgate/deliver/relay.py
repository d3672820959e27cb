"""Relay URLs: ``smtp://``, ``smtp+starttls://`` and ``smtps://`` with optional credentials."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, unquote, urlsplit

from mailgate.errors import ConfigError

__all__ = ["RelayConfig", "Security", "parse_relay_url"]


class Security(StrEnum):
    PLAIN = "plain"  #: no TLS at all (local relays, tests)
    STARTTLS = "starttls"  #: RFC 3207: upgrade after EHLO; refuse to go on without it
    TLS = "tls"  #: RFC 8314 implicit TLS (port 465)


_SCHEMES = {"smtp": Security.PLAIN, "smtp+starttls": Security.STARTTLS, "smtps": Security.TLS}
_DEFAULT_PORTS = {Security.PLAIN: 25, Security.STARTTLS: 587, Security.TLS: 465}


@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = None
    default_from: str | None = None
    verify_tls: bool = True

    @property
    def name(self) -> str:
        """Where it goes, without credentials: safe for logs and attempt records."""
        return f"smtp:{self.host}:{self.port}"

    def __repr__(self) -> str:  # never show the password
        return f"RelayConfig({self.security}://{self.host}:{self.port}, user={self.username!r})"


def parse_relay_url(url: str) -> RelayConfig:
    parts = urlsplit(url)
    security = _SCHEMES.get(parts.scheme.lower())
    if security is None:
        raise ConfigError(
            f"relay URL scheme {parts.scheme!r} is not one of smtp, smtp+starttls, smtps"
        )
    if not parts.hostname:
        raise ConfigError("relay URL has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[security]
    except ValueError:
        raise ConfigError("relay URL has an invalid port") from None
    query = parse_qs(parts.query)
    verify = query.get("verify", ["true"])[0].lower() not in {"0", "false", "no"}
    return RelayConfig(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        default_from=query.get("from", [None])[0],
        verify_tls=verify,
    )
