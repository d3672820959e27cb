"""A throwaway self-signed certificate for 127.0.0.1 (and localhost): mailgate's own
(:func:`mailgate.ingest.tls.self_signed`), so the tests' TLS peers use what dev uses."""

from __future__ import annotations

import ssl
from pathlib import Path

from mailgate.ingest import tls

__all__ = ["server_context"]


def server_context(directory: Path) -> ssl.SSLContext:
    cert, key = tls.self_signed(directory, "localhost")
    return tls.server_context(cert, key)
