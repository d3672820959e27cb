"""Turn header values, bodies and filenames from the wire into text a person can read.

Mail from the wild declares charsets wrongly or not at all, splits multi-byte
characters across encoded words, and puts raw UTF-8 in headers. These functions
never raise on such input: they pick the reading a mail client would show.
"""

from __future__ import annotations

import binascii
import re
import unicodedata

__all__ = ["decode_8bit", "decode_header", "decode_text", "safe_filename"]

# RFC 2047 §2: =?charset?encoding?encoded-text?= (RFC 2231 §5 adds "*language").
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # RFC 5322 §2.2.3: unfolding
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
# Characters that must not survive into a filename: C0/C1 controls, line and
# paragraph separators, and bidirectional overrides that disguise an extension.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MAX_FILENAME = 255
_ESCAPED = re.compile("[\udc80-\udcff]")  # undecodable bytes, as surrogateescape keeps them
# WHATWG Encoding Standard §4.2: mail and web clients read "iso-8859-1" and
# "us-ascii" labels as windows-1252 (Outlook labels cp1252 text as latin-1).
_LATIN1 = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "cp819"})


def decode_header(raw: str) -> str:
    """Unfold a header value and decode raw 8-bit bytes and RFC 2047 encoded words.

    ``raw`` is as ``read_entity`` keeps it (undecodable bytes as surrogate escapes).
    Adjacent encoded words in one charset are joined before decoding, so a UTF-8
    character split across two words (as some clients write it) comes out whole.
    """
    value = _FOLD.sub("", raw).strip()
    value = decode_8bit(value)
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: tuple[str, bytearray] | None = None
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        if pending is None or between.strip(" \t"):  # RFC 2047 §6.2: only white space is dropped
            out.append(_flush(pending) + between)
            pending = None
        charset = match.group(1).split("*", 1)[0].lower()
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            out.append(_flush(pending) + match.group(0))
            pending = None
        elif pending is not None and pending[0] == charset:
            pending[1].extend(data)
        else:
            out.append(_flush(pending))
            pending = (charset, bytearray(data))
        pos = match.end()
    out.append(_flush(pending) + value[pos:])
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    try:
        if encoding in "bB":
            return binascii.a2b_base64(text + "=" * (-len(text) % 4))
        data = text.replace("_", " ").encode("ascii")  # RFC 2047 §4.2: "_" is a space
        return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)
    except ValueError:  # binascii.Error; non-ASCII text (a2b_base64, encode): kept as is
        return None


def _flush(pending: tuple[str, bytearray] | None) -> str:
    return "" if pending is None else _decode(bytes(pending[1]), pending[0])


def decode_8bit(value: str) -> str:
    """Raw 8-bit bytes in a header (RFC 6532 allows UTF-8) read as UTF-8, else latin-1.

    The bytes arrive as surrogate escapes; text that has none is returned as is.
    """
    if not _ESCAPED.search(value):
        return value
    return _decode(value.encode("utf-8", "surrogateescape"), None)


def decode_text(payload: bytes, charset: str | None) -> str:
    """A text body as a mail client shows it, with plain newlines.

    A declared charset is used (unreadable bytes become U+FFFD). With none, or a
    declared US-ASCII that the bytes contradict, or an unknown one: strict UTF-8
    first, then latin-1 (every byte is a latin-1 character), so valid UTF-8 never
    shows U+FFFD. A charset name Python cannot decode with (a NUL in it, a lone
    surrogate, "idna") counts as unknown: it must never cost the message its text.
    """
    return _decode(payload, charset).replace("\r\n", "\n")


def _decode(data: bytes, charset: str | None) -> str:
    name = (charset or "").strip().lower()
    if name in _LATIN1:
        return _single_byte(data)
    if name and name not in ("us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        try:
            return data.decode(name, "replace")
        except (LookupError, ValueError):
            # unknown, or not a text codec ("base64"): LookupError; a name the codec
            # registry refuses (a NUL: ValueError, a lone surrogate: UnicodeEncodeError)
            # or a codec that fails whatever the error handler ("idna", "undefined",
            # "punycode"): UnicodeError. All are read as no charset at all.
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _single_byte(data)


def _single_byte(data: bytes) -> str:
    """windows-1252 where every byte is defined in it, else latin-1 (never fails)."""
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def safe_filename(name: str | None) -> str | None:
    """A filename fit to show and save: decoded, no control characters, no directories.

    Keeps every printable Unicode character; reduces ``../../etc/passwd`` or
    ``C:\\temp\\a.txt`` to its last component. None when nothing usable is left.
    """
    if name is None:
        return None
    text = decode_header(name) if "=?" in name else decode_8bit(name)
    text = "".join(c for c in text if c not in _BIDI and not _is_control(c))
    text = re.split(r"[/\\]", text)[-1].strip()
    if text in ("", ".", ".."):
        return None
    return text[:_MAX_FILENAME]


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")
