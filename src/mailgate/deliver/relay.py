"""Relay URLs: ``smtp://``, ``smtp+starttls://`` and ``smtps://`` with optional credentials.

Query parameters: ``from`` (default sender), ``verify`` (check the server's
certificate, default true) and ``auth_plaintext`` (allow credentials on a
connection that is not encrypted, default false). Anything else is refused, so a
misspelt parameter cannot silently fall back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, unquote, urlsplit

from mailgate.errors import ConfigError
from mailgate.model import Account, AccountLimits, AccountTransport, SmtpAuth, SmtpSecurity

__all__ = ["RelayConfig", "Security", "parse_relay_url"]


class Security(StrEnum):
    #: RFC 3207 opportunistic: upgrade with STARTTLS when the server offers it
    #: (RFC 7435), go on in clear when it does not; credentials only over TLS
    PLAIN = "plain"
    STARTTLS = "starttls"  #: RFC 3207: upgrade after EHLO; refuse to go on without it
    TLS = "tls"  #: RFC 8314 implicit TLS (port 465)


_SCHEMES = {"smtp": Security.PLAIN, "smtp+starttls": Security.STARTTLS, "smtps": Security.TLS}
_SCHEME_OF = {security: scheme for scheme, security in _SCHEMES.items()}
_DEFAULT_PORTS = {Security.PLAIN: 25, Security.STARTTLS: 587, Security.TLS: 465}
_ACCOUNT_SECURITY = {
    Security.PLAIN: SmtpSecurity.NONE,
    Security.STARTTLS: SmtpSecurity.STARTTLS,
    Security.TLS: SmtpSecurity.SSL,
}
_PARAMETERS = ("from", "verify", "auth_plaintext")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = None
    default_from: str | None = None
    verify_tls: bool = True
    auth_plaintext: bool = False  #: send credentials even where the connection is not encrypted

    @property
    def name(self) -> str:
        """Where it goes, as a URL without credentials: safe for logs and attempt records."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # RFC 3986 §3.2.2
        return f"{_SCHEME_OF[self.security]}://{host}:{self.port}"

    @property
    def verify_certificate(self) -> bool:
        """Whether to check the server's certificate (unless ``?verify=false``).

        Always for ``smtp+starttls://`` and ``smtps://``. Opportunistic STARTTLS on
        ``smtp://`` only encrypts against eavesdroppers (RFC 7435, Postfix's
        ``smtp_tls_security_level = may``): a self-signed certificate must not stop
        mail that would otherwise go in clear. Once there are credentials to protect,
        the certificate is checked there too, so they go only to the real server.
        """
        return self.verify_tls and (self.security is not Security.PLAIN or bool(self.username))

    def account(
        self, *, id: str = "default", tenant: str = "default", pool_size: int = 3
    ) -> Account:
        """The relay as the account it stands for (``default``), enabled: the URL *is* its
        configuration. ``smtp://`` is ``none`` with opportunistic STARTTLS; credentials
        log in with AUTH PLAIN (RFC 4616), which every submission server offers."""
        return Account(
            id=id,
            tenant=tenant,
            transport=AccountTransport.SMTP,
            smtp_host=self.host,
            smtp_port=self.port,
            smtp_security=_ACCOUNT_SECURITY[self.security],
            smtp_auth=SmtpAuth.PLAIN if self.username else SmtpAuth.NONE,
            smtp_username=self.username,
            smtp_password=self.password,
            is_outbound_enabled=True,
            limits=AccountLimits(pool_size=pool_size),
            verify_tls=self.verify_tls,
            opportunistic_tls=self.security is Security.PLAIN,
            auth_plaintext=self.auth_plaintext,
        )

    def __repr__(self) -> str:  # never show the password
        return f"RelayConfig({self.name}, user={self.username!r})"


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
    query = _query(parts.query)
    return RelayConfig(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        default_from=query.get("from"),
        verify_tls=_flag(query, "verify", default=True),
        auth_plaintext=_flag(query, "auth_plaintext", default=False),
    )


def _query(text: str) -> dict[str, str]:
    """The URL's parameters, each given once and each one we know."""
    query = parse_qs(text, keep_blank_values=True)
    for name, values in query.items():
        if name not in _PARAMETERS:
            known = ", ".join(_PARAMETERS)
            raise ConfigError(f"relay URL parameter {name!r} is not one of {known}")
        if len(values) > 1:
            raise ConfigError(f"relay URL parameter {name!r} is given more than once")
    return {name: values[0] for name, values in query.items()}


def _flag(query: dict[str, str], name: str, *, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"relay URL parameter {name!r} must be true or false, not {value!r}")
