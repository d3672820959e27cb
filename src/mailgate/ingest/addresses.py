"""Addresses as clients submit them: one mailbox (from, reply_to) or a list (to, cc, bcc).

Parsed with the RFC 5322 §3.4 parser of ``email.headerregistry``, which records a
defect for anything it had to guess at, rather than ``email.utils.parseaddr``, which
silently keeps the first address of ``"a@x.com, b@x.com"`` or ``"a@x.com <b@x.com>"``.
A list is split into its mailboxes; whatever the parser could not read exactly is
refused, so no recipient is ever dropped without a reason.

Most submitted addresses are a bare ``local@domain``: those skip the parser (whose
token tree made parsing most of an enqueue's CPU), and validated addresses are
remembered, since the same senders and recipients come back again and again.
"""

from __future__ import annotations

import functools
import re
from email import policy
from email.errors import HeaderParseError, MessageDefect, NonASCIILocalPartDefect
from email.headerregistry import Address, AddressHeader

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from mailgate.errors import InvalidMessage
from mailgate.ingest.smtp_syntax import PARSER_BUGS
from mailgate.ingest.validation import check_header_text

__all__ = ["address_problem", "parse_address_list", "parse_mailbox"]

_HOSTNAME = re.compile(
    r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$", re.IGNORECASE
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)
#: a bare dot-atom ``local@domain`` (RFC 5322 §3.4.1) with nothing the parser could read
#: differently: no display name, quotes, comments, spaces or groups
_BARE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
)


def parse_address_list(field: str, value: str, *, limit: int) -> list[str]:
    """Every mailbox of ``a@x.com, "Doe, John" <j@x.com>``, each validated and normalized."""
    return [_normalize(field, value, a, limit) for a in _parse(field, value, limit)]


def parse_mailbox(field: str, value: str, *, limit: int) -> str:
    """Exactly one mailbox (``addr`` or ``Name <addr>``): a list here is refused, not cut."""
    found = _parse(field, value, limit)
    if len(found) > 1:
        raise InvalidMessage(f"{field}: {value!r} holds {len(found)} addresses; give one")
    return _normalize(field, value, found[0], limit)


def _parse(field: str, value: str, limit: int) -> list[tuple[str, str]]:
    """``(display name, addr-spec)`` of every mailbox in ``value``."""
    check_header_text(field, value, limit=limit)
    bare = [part.strip() for part in value.split(",")]
    if all(_BARE.fullmatch(part) for part in bare):
        return [("", part) for part in bare]
    try:
        header = policy.SMTPUTF8.header_factory("To", value)
    except (HeaderParseError, IndexError, ValueError, RecursionError, *PARSER_BUGS):
        # RecursionError: the parser recurses into nested comments "((((…"
        raise InvalidMessage(f"{field}: {value!r} is not a valid address or address list") from None
    assert isinstance(header, AddressHeader)
    if any(g.display_name is not None for g in header.groups):
        raise InvalidMessage(
            f"{field}: {value!r} uses group syntax (name: ...;), which is not supported;"
            " list the addresses"
        )
    if _defects(header.defects) or not header.addresses:  # type: ignore[attr-defined]
        raise InvalidMessage(f"{field}: {value!r} is not a valid address or address list")
    return [(a.display_name, a.addr_spec) for a in header.addresses]


def _defects(found: tuple[MessageDefect, ...]) -> list[MessageDefect]:
    # a non-ASCII local part is fine: it is sent with SMTPUTF8 (RFC 6531)
    return [d for d in found if not isinstance(d, NonASCIILocalPartDefect)]


def _normalize(field: str, value: str, parsed: tuple[str, str], limit: int) -> str:
    """``addr`` or ``Name <addr>`` (no DNS look-ups), validated with email-validator."""
    display_name, addr = parsed
    # the parser decodes RFC 2047 words, so a display name can hide a CR/LF until here
    name = check_header_text(f"{field} display name", display_name, limit=limit)
    normalized, error = _validated(addr)
    if normalized is None:
        raise InvalidMessage(f"{field}: {value!r} is not a valid address: {error}")
    return _with_name(name, normalized)


@functools.lru_cache(maxsize=8192)
def address_problem(addr: str) -> str | None:
    """Why a bare address (an SMTP path's) is not one mail may be sent to, as a REST
    recipient is checked (email-validator, no DNS; dotless and special-use domains taken
    as hostnames); None when it is."""
    normalized, error = _validated(addr)
    return error if normalized is None else None


def _validated(addr: str) -> tuple[str | None, str]:
    """The normalized address, or None and why it is not valid."""
    local, _, domain = addr.rpartition("@")
    # email-validator refuses dotless and special-use domains (localhost, *.local, *.test),
    # which are normal in development: check those as a plain hostname instead.
    special = _special_use(domain)
    try:
        valid = validate_email(
            f"{local}@example.com" if special else addr,
            check_deliverability=False,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        return None, str(exc)
    if special and not _HOSTNAME.fullmatch(domain):
        return None, f"bad domain {domain!r}"
    return (f"{valid.local_part}@{domain.lower()}" if special else valid.normalized), ""


def _special_use(domain: str) -> bool:
    d = domain.lower()
    return "." not in d or any(d == s or d.endswith("." + s) for s in _SPECIAL_USE)


def _with_name(name: str, addr: str) -> str:
    if not name:
        return addr
    if addr.isascii():
        return str(Address(display_name=name, addr_spec=addr))
    quoted = name if re.fullmatch(r"[\w !#$%&'*+/=?^`{|}~-]+", name) else _quote(name)
    return f"{quoted} <{addr}>"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
