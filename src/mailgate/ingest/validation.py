"""Field checks shared by every ingest path: addresses, header values, sizes."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import parseaddr

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from mailgate.errors import InvalidMessage

__all__ = ["check_header_name", "check_header_value", "normalize_address"]

_HOSTNAME = re.compile(
    r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$", re.IGNORECASE
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def _special_use(domain: str) -> bool:
    d = domain.lower()
    return "." not in d or any(d == s or d.endswith("." + s) for s in _SPECIAL_USE)


# RFC 5322 §2.2: a field name is printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")

#: headers mailgate writes itself from the message fields
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "x-mailgate-id",
    }
)


def check_header_value(field: str, value: str) -> str:
    """Refuse CR and LF: a header value with a line break is header injection."""
    if "\r" in value or "\n" in value:
        raise InvalidMessage(f"{field}: line breaks (CR/LF) are not allowed in a header value")
    if "\0" in value:
        raise InvalidMessage(f"{field}: NUL is not allowed in a header value")
    return value


def check_header_name(name: str) -> str:
    if not _FIELD_NAME.match(name):
        raise InvalidMessage(f"headers: {name!r} is not a valid header name")
    if name.lower() in RESERVED_HEADERS:
        raise InvalidMessage(f"headers: {name} is set from the message fields, not in headers")
    return name


def normalize_address(field: str, value: str) -> str:
    """Validate ``addr`` or ``Name <addr>`` (no DNS look-ups) and return it normalized."""
    check_header_value(field, value)
    name, addr = parseaddr(value)
    if not addr or ("<" in value and not value.rstrip().endswith(">")):
        raise InvalidMessage(f"{field}: {value!r} is not an email address")
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
        raise InvalidMessage(f"{field}: {value!r} is not a valid address: {exc}") from None
    if special and not _HOSTNAME.match(domain):
        raise InvalidMessage(f"{field}: {value!r} is not a valid address: bad domain {domain!r}")
    normalized = f"{valid.local_part}@{domain.lower()}" if special else valid.normalized
    if not name:
        return normalized
    if normalized.isascii():
        return str(Address(display_name=name, addr_spec=normalized))
    quoted = name if re.fullmatch(r"[\w !#$%&'*+/=?^`{|}~-]+", name) else _quote(name)
    return f"{quoted} <{normalized}>"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
