"""UI sessions and CSRF tokens: signed values, no server-side table (pure).

A session cookie is ``<id>.<issued>.<signature>``: a random id, the Unix second it was
issued, and an HMAC-SHA256 of both under the session key. The CSRF token of a session
is an HMAC of its id under the same key (the "HMAC-based token" of OWASP's CSRF
cheat sheet), so it needs no storage either and dies with the session.

The key comes from :func:`session_key`: derived from the gateway's secret key and the
UI credentials, so changing the admin password or the API token ends every session;
without a secret key it is random per process (a restart asks to log in again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["Session", "SessionSigner", "session_key"]

#: a session lasts 12 hours from the login (then Basic Auth or the form once more)
SESSION_LIFETIME = 12 * 3600


def session_key(secret_key: str | None, *credentials: str | None) -> bytes:
    """The signing key: HMAC of the credentials under ``secret_key``, else random."""
    if secret_key is None:
        return secrets.token_bytes(32)
    material = "\x00".join(c or "" for c in ("mailgate-ui-session", *credentials))
    return hmac.new(secret_key.encode(), material.encode(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    issued: int  #: Unix seconds
    cookie: str  #: the signed value, as the cookie carries it


class SessionSigner:
    def __init__(self, key: bytes, lifetime: int = SESSION_LIFETIME) -> None:
        self._key = key
        self.lifetime = lifetime

    def new(self, now: float) -> Session:
        sid, issued = secrets.token_urlsafe(18), int(now)
        payload = f"{sid}.{issued}"
        return Session(sid, issued, f"{payload}.{self._sign('session', payload)}")

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie holds: None when absent, forged, or expired."""
        if not cookie or cookie.count(".") != 2:
            return None
        sid, issued, signature = cookie.split(".")
        good = self._sign("session", f"{sid}.{issued}")
        if not _same(signature, good) or not issued.isdigit():
            return None
        if not 0 <= now - int(issued) < self.lifetime:
            return None
        return Session(sid, int(issued), cookie)

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf", session.id)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and _same(given, self.csrf_token(session))

    def _sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that takes any text (a cookie may hold non-ASCII)."""
    return hmac.compare_digest(given.encode(), expected.encode())
