"""What a client's command lines say (RFC 5321 §4.1): the verb and its argument, the path of
MAIL FROM and RCPT TO, and their ESMTP parameters — pure functions of the text, for the
verbs of :class:`~mailgate.ingest.smtp_protocol.SmtpConnection`.

A plain ``<local@domain>`` path is matched with one regular expression; only the rest goes
to the email package's RFC 5322 parser, which aiosmtpd ran on every address
(docs/benchmarks.md), so a path reads as it did under aiosmtpd (the null path ``<>`` aside).
"""

from __future__ import annotations

import re
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

__all__ = [
    "MAX_COMMAND_LINE",
    "PARSER_BUGS",
    "after_keyword",
    "is_xtext",
    "mail_params",
    "parse_path",
    "path_params",
    "split_command",
    "unbalanced",
]

MAX_COMMAND_LINE = 2048
"""Octets of a command line, its line end (CRLF or a bare LF) not counted. RFC 5321
§4.5.3.1.4 allows 512 and its extensions more (RFC 1870's SIZE, RFC 4954's AUTH initial
response); longer lines are refused with 500 and thrown away up to their end, so no line
is ever buffered whole."""


def split_command(line: bytes | bytearray) -> tuple[str, str | None] | None:
    """The verb (upper case) and the argument (stripped; None if there is none) of a
    command line without its line end; None when it is no command: empty, a NUL in it, or
    a verb that is not letters and digits (what the 500 would echo back)."""
    if b"\0" in line:
        return None
    verb, _, arg = bytes(line).partition(b" ")
    if not verb.isalnum():  # bytes.isalnum: ASCII letters and digits only
        return None
    arg = arg.strip()
    # an argument that is not UTF-8 keeps its bytes (surrogateescape), as aiosmtpd did
    return verb.decode("ascii").upper(), arg.decode("utf-8", "surrogateescape") if arg else None


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
#: ``<Dot-string@Domain>`` (RFC 5321 §4.1.2), nearly every path a client sends
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*)>")
#: what no path may hold (RFC 5321 §4.1.2, RFC 6531 §3.3): a control character, or an
#: octet that is not UTF-8 (kept by :func:`split_command` as a lone surrogate)
_NOT_IN_A_PATH = re.compile("[\x00-\x1f\x7f\udc80-\udcff]")
#: what the email package's RFC 5322 parser raises, besides HeaderParseError, on some
#: malformed input (a domain literal left open: ``a@["``; ``x, .@``; ``=?@[ ``): bugs of
#: its own, each meaning "malformed" to its callers (here and ingest.addresses)
PARSER_BUGS = (AttributeError, TypeError, UnboundLocalError)


def parse_path(arg: str) -> tuple[str, str] | None:
    """The address of a MAIL FROM or RCPT TO path (RFC 5321 §4.1.2) and the text after it
    (its parameters, from the white space before them): ``""`` for the null path ``<>``,
    None when it is malformed.

    A plain ``<local@domain>`` is matched with one regular expression; anything else
    (quoted local parts, source routes, address literals, non-ASCII, no brackets) goes to
    the email package's RFC 5322 parser, as aiosmtpd parsed every address. A path with a
    control character or an octet that is not UTF-8 is malformed: that parser would drop
    the one (``<a@exa\vmple.com>`` read as ``a@example.com``) and keep the other as
    U+FFFD, so the address stored would not be the one the client sent."""
    plain = _PLAIN_PATH.match(arg)
    if plain is not None:
        return plain.group(1), arg[plain.end() :]
    if arg.startswith("<>"):
        return "", arg[2:]
    try:
        if arg.lstrip().startswith("<"):
            angle, rest = get_angle_addr(arg)
            if not arg[: len(arg) - len(rest)].rstrip().endswith(">"):
                return None  # a comment after the path (RFC 5322 CFWS; no such thing in SMTP)
            address = angle.addr_spec
        else:
            spec, rest = get_addr_spec(arg)
            address = spec.addr_spec
    except (HeaderParseError, IndexError, *PARSER_BUGS):
        return None
    path = arg[: len(arg) - len(rest)].rstrip()  # (the parser takes white space after it)
    if _NOT_IN_A_PATH.search(path):
        return None
    return (address, arg[len(path) :]) if address else None


def mail_params(options: list[str]) -> dict[str, str | bool] | None:
    """ESMTP parameters (RFC 5321 §4.1.2 ``esmtp-param``): keyword → value, or True for a
    keyword without one; None if one is malformed."""
    params: dict[str, str | bool] = {}
    for option in options:
        keyword, eq, value = option.partition("=")
        if not keyword.isalnum() or (eq and not value):
            return None
        params[keyword] = value if eq else True
    return params


_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})+")


def is_xtext(value: str) -> bool:
    """RFC 3461 §4 ``xtext``: printable ASCII but ``+`` and ``=``, which ``+XX`` spells."""
    return _XTEXT.fullmatch(value) is not None


def after_keyword(arg: str | None, keyword: str) -> str | None:
    """``arg`` after ``keyword`` (``FROM:``, ``TO:``; any case), stripped; None without it."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :].strip()


#: what separates a path and its parameters: spaces, a tab taken as one
_BLANKS = re.compile("[ \t]+")


def path_params(rest: str) -> list[str] | None:
    """The parameters after a path (upper case; see :func:`parse_path`), or None when the
    first does not follow the path after white space (``<a@b.c>SIZE=1``)."""
    if rest[:1] not in ("", " ", "\t"):
        return None
    return [param for param in _BLANKS.split(rest.upper()) if param]


def unbalanced(path: str) -> bool:
    """A path opened with ``<`` and not closed, or closed and not opened (the RFC 5322
    parser would take ``<a@example.com`` as an address). A bare address without brackets
    is let through, as most servers do. A quoted local part may hold spaces
    (``<"a b"@example.com>``, RFC 5321 §4.1.2 ``qtextSMTP``). The path ends at white
    space, a tab as a space."""
    first = _BLANKS.split(path, maxsplit=1)[0]
    if '"' not in first or not first.startswith("<"):
        return first.startswith("<") != first.endswith(">")
    quoted = escaped = False
    for char in path[1:]:
        if escaped:
            escaped = False
        elif char == '"':
            quoted = not quoted
        elif quoted:
            escaped = char == "\\"
        elif char in "> \t":
            return char != ">"
    return True
