"""Encodings of big values a block at a time, for worker threads that share the GIL with
the event loop.

One C call holds the GIL from its start to its end: for a 10 MiB attachment,
``base64.b64encode`` held it 23 ms, ``json.dumps`` of its base64 62 ms, and the event
loop, waiting for the GIL, served no one meanwhile, even though the work ran in a worker
thread. The functions here give the same results as those calls, built from calls on
blocks of at most about 200 KB each (a millisecond or two), between which the loop gets
its turn (every ``sys.getswitchinterval()``, 5 ms).
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["BLOCK", "b64_text", "json_blocks", "utf8_text"]

BLOCK = 3 << 16
"""Octets (or characters) given to one C call: 196,608, a multiple of 3, so that base64
blocks join with no padding between them."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def b64_text(data: bytes) -> str:
    """``base64.b64encode(data).decode()``."""
    view = memoryview(data)
    return "".join(
        base64.b64encode(view[i : i + BLOCK]).decode("ascii") for i in range(0, len(view), BLOCK)
    )


def utf8_text(data: bytes, errors: str = "replace") -> str:
    """``data.decode("utf-8", errors)`` (a sequence split between blocks is joined first,
    as the incremental decoder does); raises what that raises with ``errors="strict"``."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    view = memoryview(data)
    parts = [decoder.decode(view[i : i + BLOCK]) for i in range(0, len(view), BLOCK)]
    parts.append(decoder.decode(b"", final=True))
    return "".join(parts)


def json_blocks(value: Any) -> list[bytes]:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"),
    allow_nan=False).encode()`` in pieces (to be sent one after the other, never joined
    into one), a long string escaped a block at a time: for JSON objects, arrays,
    strings, numbers, true, false and null (a dict with a key that is not a string is
    dumped whole, as json converts such keys). The small pieces (a key, a comma, a
    number) are joined into blocks of up to :data:`BLOCK` octets: sent one by one, an
    event with 40,000 headers was 120,000 writes."""
    blocks: list[bytes] = []
    joined: list[bytes] = []
    size = 0
    for piece in _pieces(value):  # made as they are joined: never all held at once
        data = piece.encode()
        if joined and size + len(data) > BLOCK:
            blocks.append(b"".join(joined))
            joined, size = [], 0
        joined.append(data)
        size += len(data)
    if joined:
        blocks.append(b"".join(joined))
    return blocks


def _pieces(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if len(value) <= BLOCK:
            yield _dumps(value)
            return
        yield '"'
        for i in range(0, len(value), BLOCK):
            yield _dumps(value[i : i + BLOCK])[1:-1]
        yield '"'
    elif isinstance(value, dict) and all(isinstance(key, str) for key in value):
        yield "{"
        for n, (key, item) in enumerate(value.items()):
            yield f"{',' if n else ''}{_dumps(key)}:"
            yield from _pieces(item)
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for n, item in enumerate(value):
            if n:
                yield ","
            yield from _pieces(item)
        yield "]"
    else:
        yield _dumps(value)
