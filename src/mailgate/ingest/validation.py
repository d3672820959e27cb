"""Field checks shared by every ingest path: header text, bodies, attachment names and types.

The rule behind every check here: what passes must build. ``mailgate.mime`` writes
headers with the ``email`` package, which refuses (at send time, on every retry) any
character that ``str.splitlines`` treats as a line break, and no text with a lone
surrogate can be encoded as UTF-8 at all. So those are refused when a message is
submitted, with the field and the reason, instead of being queued to fail later.
"""

from __future__ import annotations

import re
from pathlib import PureWindowsPath

from mailgate.errors import InvalidMessage

__all__ = [
    "MIME_TYPE_PATTERN",
    "MULTIPART_REFUSED",
    "RESERVED_HEADERS",
    "base_filename",
    "check_body",
    "check_cid",
    "check_content_type",
    "check_header_name",
    "check_header_text",
    "check_plain_text",
    "check_storable",
    "is_multipart",
]

#: C0 controls except TAB, DEL, C1 controls (U+0085 NEL among them), the Unicode line and
#: paragraph separators, and lone surrogates: the characters a header value may not carry.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: the same without the TAB exception, for names that end up inside a parameter
_NAME_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: a body may hold any line break, but NUL cannot be stored (PostgreSQL text) and a lone
#: surrogate cannot be encoded
_BODY_UNSAFE = re.compile("[\x00\ud800-\udfff]")

# RFC 5322 §2.2: a field name is printable US-ASCII except ":"; §2.1.1: a line should
# stay within 78 characters, so a name that leaves no room for ": " and a value on its
# first line would be folded by the builder into something else than was submitted.
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")

# RFC 2045 §5.1: type "/" subtype, each a token: US-ASCII except SPACE, CTLs and tspecials.
_TSPECIAL_FREE = r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]+"
#: ``type/subtype`` as a pattern, for the published JSON Schema too
MIME_TYPE_PATTERN = rf"^{_TSPECIAL_FREE}/{_TSPECIAL_FREE}$"
_MIME_TYPE = re.compile(MIME_TYPE_PATTERN)

# RFC 2392: a Content-ID is a msg-id: visible US-ASCII, no angle brackets (we add them).
_CID = re.compile(r"^[!-;=?-~]{1,255}$")

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


def check_header_text(field: str, value: str, *, limit: int) -> str:
    """A header value (subject, custom header, display name): at most ``limit`` characters,
    no line break or control character except TAB (RFC 5322 §2.2: header text is
    printable characters and WSP), no lone surrogate."""
    if len(value) > limit:
        raise InvalidMessage(f"{field}: {len(value)} characters, over the limit of {limit}")
    _refuse(field, value, _HEADER_UNSAFE, "a header value")
    return value


def check_plain_text(field: str, value: str) -> str:
    """A single-line value stored as text (idempotency key, file name): no controls at all."""
    _refuse(field, value, _NAME_UNSAFE, "this field")
    return value


def check_body(field: str, value: str | None) -> str | None:
    """Bodies may hold any text a MIME part can carry; only NUL and lone surrogates are out."""
    if value is not None:
        _refuse(field, value, _BODY_UNSAFE, "a body")
    return value


def check_storable(field: str, value: str) -> str:
    """Any text that is only stored (metadata): NUL and lone surrogates cannot be."""
    _refuse(field, value, _BODY_UNSAFE, "stored text")
    return value


def check_header_name(name: str) -> str:
    if not _FIELD_NAME.fullmatch(name):
        raise InvalidMessage(
            f"headers: {name!r} is not a valid header name"
            " (1 to 76 printable US-ASCII characters, no ':' or space)"
        )
    if name.lower() in RESERVED_HEADERS:
        raise InvalidMessage(f"headers: {name} is set from the message fields, not in headers")
    return name


def check_content_type(field: str, value: str) -> str:
    """``type/subtype`` (RFC 2045 §5.1), lower-cased; parameters are refused, not dropped.
    Not a multipart type: that is a container of parts between boundaries (RFC 2046
    §5.1.1), which a file's base64 bytes are not."""
    if not _MIME_TYPE.fullmatch(value):
        raise InvalidMessage(
            f"{field}: {value!r} is not a MIME type (type/subtype, RFC 2045 tokens, no parameters)"
        )
    if is_multipart(value):
        raise InvalidMessage(f"{field}: {MULTIPART_REFUSED}")
    return value.lower()


#: why an attachment may not be typed multipart, for every path that takes a type
MULTIPART_REFUSED = (
    "an attachment cannot be multipart (RFC 2046 §5.1.1: parts between boundaries, not a"
    " file's bytes); send the file as application/octet-stream"
)


def is_multipart(content_type: str) -> bool:
    return content_type.strip().lower().startswith("multipart/")


def check_cid(field: str, value: str) -> str:
    if not _CID.fullmatch(value):
        raise InvalidMessage(
            f"{field}: {value!r} is not a Content-ID (visible US-ASCII, no spaces or <>)"
        )
    return value


def base_filename(field: str, value: str) -> str:
    """The last path component of a submitted file name: a client's ``../../etc/passwd`` or
    ``C:\\x\\y.txt`` must not reach a recipient's save dialog as a path."""
    check_plain_text(field, value)
    name = PureWindowsPath(value).name.strip()  # splits on both "/" and "\\", drops "C:"
    if name in ("", ".", ".."):
        raise InvalidMessage(f"{field}: {value!r} has no file name once its path is removed")
    return name


def _refuse(field: str, value: str, unsafe: re.Pattern[str], what: str) -> None:
    found = unsafe.search(value)
    if found is None:
        return
    char, at = found.group(), found.start()
    if char in "\r\n":
        raise InvalidMessage(f"{field}: line breaks (CR/LF) are not allowed in {what}")
    if char == "\0":
        raise InvalidMessage(f"{field}: NUL is not allowed in {what}")
    if "\ud800" <= char <= "\udfff":
        raise InvalidMessage(
            f"{field}: U+{ord(char):04X} at position {at} is a lone surrogate, not valid Unicode"
        )
    raise InvalidMessage(
        f"{field}: control character U+{ord(char):04X} at position {at} is not allowed in {what}"
    )
