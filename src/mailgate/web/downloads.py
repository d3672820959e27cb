"""Response headers that make a captured attachment a download, never a page.

Attachments are whatever a sender put in a message. Served inline on the API's
origin, an HTML part's script could call ``DELETE /api/v1/inbox``; a filename
carrying CR/LF (RFC 2231 ``%0D%0A``) broke the response header itself; and
``../../etc/passwd`` was handed on as a name. So every attachment, whatever its
type, goes out with ``Content-Disposition: attachment`` and a safe base name
(RFC 6266 §4.1, with an RFC 8187 ``filename*`` for non-ASCII),
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox``.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from mailgate.inbox.service import Download

__all__ = [
    "download_headers",
    "download_response",
    "filename_params",
    "safe_filename",
    "safe_media_type",
    "stream_response",
]

#: RFC 6838 §4.2 type/subtype names; anything else goes out as octet-stream.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
#: RFC 8187 §3.2.1 attr-char, besides the letters, digits and ``_.-~`` quote() keeps.
_ATTR_CHAR_EXTRA = "!#$&+^`|"
_MAX_NAME = 200  # characters; file systems allow 255 bytes


def download_headers(filename: str | None, content_type: str, index: int) -> dict[str, str]:
    """Headers for attachment ``index``; ``content_type`` is used only if well formed."""
    media_type = safe_media_type(content_type)
    name = safe_filename(filename, index, media_type)
    return {
        "content-type": media_type,
        "content-disposition": _disposition(name),
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox",
    }


def download_response(download: Download, headers: dict[str, str]) -> Response:
    """``download`` with ``headers``: its bytes, or its file sent a block at a time
    (read in Starlette's thread pool) and closed when sent."""
    if download.file is None:
        return Response(download.content, headers=headers)
    sized = {**headers, "content-length": str(download.size)}
    return stream_response(_blocks(download.file), [download.file], sized)


def stream_response(
    blocks: Iterator[bytes], files: Sequence[BinaryIO], headers: dict[str, str]
) -> Response:
    """``blocks`` sent as they come (made in Starlette's thread pool), ``files`` (what
    they are read from) closed when sent."""
    return _FileResponse(blocks, files, headers=headers)


class _FileResponse(StreamingResponse):
    """Blocks read from open files, sent as they come, the files closed once the
    response is done, or the client gone: Starlette stops the stream without closing
    its iterator, so a file closed by the iterator stayed open (its disk space held: its
    name is gone) until the garbage collector came by."""

    def __init__(
        self, blocks: Iterator[bytes], files: Sequence[BinaryIO], headers: dict[str, str]
    ) -> None:
        self._files = files
        super().__init__(blocks, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for file in self._files:
                file.close()


def _blocks(file: BinaryIO) -> Iterator[bytes]:
    while block := file.read(_BLOCK):
        yield block


_BLOCK = 1024 * 1024


def safe_media_type(content_type: str) -> str:
    candidate = content_type.strip().lower()
    return candidate if _MEDIA_TYPE.fullmatch(candidate) else "application/octet-stream"


def safe_filename(filename: str | None, index: int, media_type: str) -> str:
    """A base name with no control characters or path; ``attachment-N.ext`` when none is left.

    The extension of the default name is guessed from ``media_type``.
    """
    name = _base_name(filename or "")
    if not name:
        ext = mimetypes.guess_extension(media_type, strict=False) or ".bin"
        return f"attachment-{index}{ext}"
    if len(name) > _MAX_NAME:
        _stem, dot, ext = name.rpartition(".")
        keep = dot + ext if dot and len(ext) < 16 else ""
        name = name[: _MAX_NAME - len(keep)] + keep
    return name


def _base_name(filename: str) -> str:
    # Cc: C0/C1 controls (CR, LF, NUL…); Zl/Zp: U+2028/U+2029; Cf: bidi overrides.
    kept = "".join(
        ch for ch in filename if unicodedata.category(ch) not in {"Cc", "Cf", "Zl", "Zp", "Cs"}
    )
    base = kept.replace("\\", "/").rsplit("/", 1)[-1]
    base = base.strip().lstrip(".").rstrip(". ")  # no hidden files, no Windows-trimmed tails
    return base


def _disposition(name: str) -> str:
    return f"attachment; {filename_params(name)}"


def filename_params(name: str) -> str:
    """RFC 6266 §4.1: a plain ``filename`` for old clients, ``filename*`` with the real one
    (a header is Latin-1 text: ``name`` itself may not fit in one)."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = re.sub(r'["\\%]', "_", fallback).strip() or "attachment"
    encoded = quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8")
    return f"filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
