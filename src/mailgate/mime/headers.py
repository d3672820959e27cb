"""Write the header fields mailgate sets itself, encoded and folded in linear time (and
take fields out of a message passed on as written: :func:`without_fields`).

The ``email`` package re-parses every value it is given and refolds it on output;
for long non-ASCII text that refolding is quadratic (a 4,000-character display
name took seconds). Here each value is encoded once: plain printable ASCII is kept
as it is and folded at its spaces (RFC 5322 §2.2.3), anything else becomes RFC 2047
encoded-words of at most 75 characters each (RFC 2047 §2), separated by folding
white space, which decoders drop between adjacent encoded-words (RFC 2047 §6.2).
Every line stays under 998 octets (RFC 5322 §2.1.1) and usually under 78.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Iterable, Iterator, Sequence

from mailgate.model import mailbox

__all__ = ["address_field", "header_block", "unstructured_field", "without_fields"]

_FOLD_AT = 78  #: RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
_WORD_MAX = 900  #: a run without a space longer than this is encoded, so it can be split
_CHUNK = 45  #: UTF-8 bytes per encoded-word: base64 gives 60, plus 12 for =?utf-8?b??=
_PLAIN = re.compile(r"[ -~]*")  #: printable ASCII and space: written as it is
_ATEXT_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")  #: RFC 5322 §3.2.3 atoms


def header_block(fields: Iterable[str]) -> bytes:
    """Folded fields (``Name: value``) joined with CRLF, ready to precede the MIME entity."""
    return "".join(f"{field}\r\n" for field in fields).encode("utf-8")


def unstructured_field(name: str, value: str) -> str:
    """An unstructured field (RFC 5322 §3.2.5): Subject, custom headers."""
    return _fold(name, list(_unstructured_tokens(value)))


def address_field(name: str, addresses: Sequence[str]) -> str:
    """An address-list field (From, To, Cc, Reply-To) from normalized ``Name <addr>`` values.

    Non-ASCII addresses are written raw (RFC 6532, sent only with SMTPUTF8).
    """
    tokens: list[str] = []
    for i, value in enumerate(addresses):
        display, addr = mailbox(value)
        words = [*_phrase_tokens(display), f"<{addr}>"] if display else [addr]
        if i < len(addresses) - 1:
            words[-1] += ","
        tokens += words
    return _fold(name, tokens)


def _unstructured_tokens(value: str) -> Iterator[str]:
    if _PLAIN.fullmatch(value) and "=?" not in value and _short_words(value):
        yield from value.split(" ")
    else:
        yield from _encoded_words(value)


def _phrase_tokens(display: str) -> list[str]:
    """A display name as atoms, a quoted-string (RFC 5322 §3.2.4) or encoded-words."""
    if not (_PLAIN.fullmatch(display) and "=?" not in display and _short_words(display)):
        return _encoded_words(display)
    if _ATEXT_PHRASE.fullmatch(display) and display.strip() == display and "  " not in display:
        return display.split(" ")
    quoted = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted.split(" ")  # FWS may fold inside a quoted-string (RFC 5322 §3.2.4)


def _short_words(value: str) -> bool:
    return all(len(word) <= _WORD_MAX for word in value.split(" "))


def _encoded_words(text: str) -> list[str]:
    """``=?utf-8?b?…?=`` words, never splitting a character between two of them.

    A word ends after a space of the text where one is near, so readers that (against
    RFC 2047 §6.2) keep the folding white space between encoded-words, as Python's
    address parser does, show at most a doubled space instead of a split word.
    """
    words: list[str] = []
    chunk = ""
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > _CHUNK and chunk:
            cut = chunk.rfind(" ") + 1 or len(chunk)
            words.append(_b_word(chunk[:cut]))
            chunk = chunk[cut:]
            size = len(chunk.encode("utf-8"))
        chunk += char
        size += width
    if chunk or not words:
        words.append(_b_word(chunk))
    return words


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _fold(name: str, tokens: list[str]) -> str:
    """Join tokens with single spaces, breaking lines before a token when one would pass 78.

    A break is never placed before an empty token, so no line is only white space, nor
    before the first token: a value starting with folding white space would keep it.
    """
    lines: list[str] = []
    line = f"{name}:"
    for i, token in enumerate(tokens):
        if i and token and len(line) + 1 + len(token) > _FOLD_AT and line.strip():
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines)


_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_BLANK_LINE = re.compile(rb"\n\r?\n")  #: the end of the header section


def without_fields(raw: bytes, drop: Collection[bytes]) -> tuple[bytes, bytes, set[bytes]]:
    """Split ``raw`` into its header section without the fields named in ``drop``
    (lower-case names; their folded lines go with them) and its body (from the blank
    line on, byte for byte); also the lower-case names of the fields it had."""
    if raw.startswith((b"\r\n", b"\n")):  # no header section at all
        return b"", raw, set()
    blank = _BLANK_LINE.search(raw)
    head, body = (raw[: blank.start() + 1], raw[blank.start() + 1 :]) if blank else (raw, b"")
    kept: list[bytes] = []
    names: set[bytes] = set()
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a folded line belongs to the field before it
            if not dropping:
                kept.append(line)
            continue
        match = _FIELD_NAME.match(line)
        name = match.group(1).lower() if match else b""
        names.add(name)
        dropping = name in drop
        if not dropping:
            kept.append(line)
    return b"".join(kept), body, names
