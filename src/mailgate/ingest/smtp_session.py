"""What one SMTP session knows: its client (:class:`Session`: the socket address, TLS,
HELO/EHLO, AUTH; :func:`peer_text`, :func:`within` and :func:`tls_info` read the address
and the TLS connection), the mail transaction under way (:class:`Envelope`, RFC 5321
§3.3), and why the server refused something (:class:`Refusal`, a metrics label).

Plain values, shared by the connection's engine (:mod:`.smtp_engine`), its verbs
(:mod:`.smtp_protocol`, :mod:`.smtp_auth`), the DATA reader (:mod:`.smtp_data`) and the
handlers, which get a session and an envelope with every hook call as aiosmtpd's did.
"""

from __future__ import annotations

import ipaddress
import ssl
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mailgate.ingest.chunking import ChunkedBody

if TYPE_CHECKING:
    from mailgate.ingest.smtp_data import Spooled

__all__ = ["Envelope", "Networks", "Refusal", "Session", "peer_text", "tls_info", "within"]


class Refusal(StrEnum):
    """Why the server refused a message, or one of its recipients (a metrics label)."""

    TOO_BIG = "too_big"  #: over the size limit, announced with SIZE or sent (RFC 1870: 552)
    TOO_MANY_RECIPIENTS = "too_many_recipients"  #: RCPT past the limit (RFC 5321 §4.5.3.1.10)
    BAD_ADDRESS = "bad_address"  #: a malformed MAIL FROM or RCPT TO address (553)
    LINE_TOO_LONG = "line_too_long"  #: a DATA line past the limit (RFC 5321 §4.5.3.1.6)
    #: the capture could not be committed (451), or the failed AUTH counted (454)
    STORE_UNAVAILABLE = "store_unavailable"
    TOO_MANY_CONNECTIONS = "too_many_connections"  #: over smtp.max_connections (421)
    AUTH_THROTTLED = "auth_throttled"  #: too many failed AUTH from the address (421)
    CHAOS = "chaos"  #: a chaos trigger fired (:mod:`mailgate.ingest.chaos`)


class Session:
    """What a connection knows of its client; new after STARTTLS (RFC 3207 §4.2)."""

    __slots__ = ("auth_data", "authenticated", "extended_smtp", "host_name", "peer", "ssl")

    def __init__(self, peer: Any, ssl: dict[str, Any] | None = None) -> None:
        self.peer = peer  #: the client's socket address
        self.ssl = ssl  #: the TLS version and cipher; None in clear text
        self.host_name: str | None = None  #: what HELO/EHLO said
        self.extended_smtp = False  #: EHLO (not HELO)
        self.authenticated = False
        self.auth_data: Any = None  #: the successful AUTH's :attr:`AuthResult.auth_data`


class Envelope:
    """One mail transaction (RFC 5321 §3.3): from MAIL to the end of DATA or RSET."""

    __slots__ = ("chunked", "line_endings", "mail_from", "mail_options", "original_content",
                 "rcpt_options", "rcpt_tos", "smtp_utf8", "spooled")  # fmt: skip

    def __init__(self) -> None:
        self.mail_from: str | None = None  #: "" for the null reverse-path ``<>``
        self.mail_options: list[str] = []
        self.smtp_utf8 = False
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []
        self.original_content: bytes | None = None  #: the message, unstuffed
        #: its CRLF pairs, LF and CR octets when counted as it came (a big one); else None
        self.line_endings: tuple[int, int, int] | None = None
        #: or, past the spool's threshold (tempfile mode), the file it was written to
        self.spooled: Spooled | None = None
        #: the BDAT chunks so far (RFC 3030); None while no BDAT was taken (DATA may come)
        self.chunked: ChunkedBody | None = None


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def within(peer: Any, networks: Networks) -> bool:
    """Whether the client's address is in one of ``networks``."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    try:
        address = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def peer_text(peer: Any) -> str | None:
    """``host:port`` of a socket address."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None if peer is None else str(peer)


def tls_info(ssl_object: Any) -> dict[str, Any] | None:
    """The TLS version and cipher of a connection (:attr:`Session.ssl`); None in clear text."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return {"version": ssl_object.version(), "cipher": ssl_object.cipher()}
