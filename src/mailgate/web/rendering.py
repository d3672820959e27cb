"""JSON for the read endpoints, one item at a time, so no stored row can make them fail.

FastAPI's ``jsonable_encoder`` and pydantic's serializer stop at 255 levels of
nesting: one message with deep ``metadata`` turned ``GET /messages`` into a 500
for every message. Here each item is encoded by itself with :func:`json.dumps`
(which handles nesting up to the interpreter's recursion limit); an item that
still cannot be encoded — nested too deep, a NaN, a value JSON has no form for —
keeps every other field and shows, in place of the bad one, why it is missing.
Lone surrogates (which UTF-8 cannot carry) leave as ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.responses import Response

__all__ = ["encode", "encode_item", "json_response", "page_response"]

#: What :func:`json.dumps` raises for values it cannot write.
_UNSERIALISABLE = (RecursionError, ValueError, TypeError)

Path = Sequence[str]


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (RFC 8259 §6 has no form for them)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # Only a lone surrogate cannot be encoded, and only inside a JSON string,
    # where its backslash form \udXXX is exactly the JSON escape.
    return text.encode("utf-8", "backslashreplace")


def encode_item(item: dict[str, Any], *, user_fields: Iterable[Path] = ()) -> bytes:
    """``item`` as JSON; fields that cannot be written are replaced by an explanation.

    ``user_fields`` name the parts that hold stored, client-provided data (such
    as a message's ``metadata``): those are replaced first, by
    ``{"error": "…"}``, so the item keeps its documented shape.
    """
    try:
        return encode(item)
    except _UNSERIALISABLE:
        pass
    repaired = dict(item)
    for path in user_fields:
        repaired = _replace_if_bad(repaired, tuple(path))
    try:
        return encode(repaired)
    except _UNSERIALISABLE:
        return encode({key: _shown(key, value) for key, value in repaired.items()})


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


def page_response(items: Iterable[bytes], next_cursor: str | None) -> Response:
    """``{"items": [...], "next_cursor": ...}`` from already encoded items."""
    body = b'{"items":[' + b",".join(items) + b'],"next_cursor":' + encode(next_cursor) + b"}"
    return json_response(body)


def _replace_if_bad(item: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    key, rest = path[0], path[1:]
    if key not in item:
        return item
    value = item[key]
    if rest and isinstance(value, dict):
        return {**item, key: _replace_if_bad(value, rest)}
    return {**item, key: _shown(key, value)}


def _shown(key: str, value: Any) -> Any:
    """``value`` when it can be written as JSON, else why not (a dict keeps its type)."""
    try:
        encode(value)
    except _UNSERIALISABLE as exc:
        reason = f"{key} could not be shown as JSON: {_reason(exc)}"
        return {"error": reason} if isinstance(value, dict) else reason
    return value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc) or type(exc).__name__
