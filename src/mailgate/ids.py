"""Identifiers for messages and captured mail.

IDs are UUIDv7 (RFC 9562 §5.7): the first 48 bits are the Unix time in
milliseconds, so IDs sort by creation time. Listings page by ID alone.
"""

from __future__ import annotations

import secrets
import time
import uuid

__all__ = ["new_id"]


def new_id() -> str:
    ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 62) << 64  # 12 bits rand_a
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # 62 bits rand_b
    return str(uuid.UUID(int=value))
