"""A message's ``metadata``: the client's own JSON, kept and echoed back, bounded at submission.

Unbounded, one message with metadata nested a few hundred levels deep made every
read of the listing fail (JSON encoders recurse). So metadata is walked here with an
explicit stack (a 100,000-level list costs a loop, not a ``RecursionError``), limited in
depth and in encoded size, and kept to what JSON and both store engines can hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mailgate.errors import InvalidMessage
from mailgate.ingest.validation import check_storable

__all__ = ["check_metadata"]

_SCALARS = (str, int, float, bool, type(None))


def check_metadata(value: Mapping[str, Any], *, max_depth: int, max_bytes: int) -> dict[str, Any]:
    """``value`` if it is plain JSON, at most ``max_depth`` containers deep (the metadata
    object itself is level 1) and at most ``max_bytes`` as compact UTF-8 JSON."""
    _walk(value, max_depth)
    size = len(_encode(value))
    if size > max_bytes:
        raise InvalidMessage(f"metadata: {size} bytes as JSON, over the limit of {max_bytes}")
    return dict(value)


def _walk(root: object, max_depth: int) -> None:
    stack: list[tuple[object, int, str]] = [(root, 1, "metadata")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, Mapping | list) and depth > max_depth:
            raise InvalidMessage(f"{where}: nested deeper than the limit of {max_depth} levels")
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1, f"{where}.{_key(where, k)}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, str):
            check_storable(where, node)
        elif not isinstance(node, _SCALARS):
            raise InvalidMessage(f"{where}: {type(node).__name__} is not a JSON value")


def _key(where: str, key: object) -> str:
    if not isinstance(key, str):
        raise InvalidMessage(f"{where}: key {key!r} is not a string")
    check_storable(f"{where} key", key)
    return key


def _encode(value: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or infinity, or an integer too long to print
        raise InvalidMessage(f"metadata: not valid JSON: {exc}") from None
    return text.encode()
