"""Account bodies pointing at a real aiosmtpd :class:`~tests.peers.Upstream` (Postmark's
``GET /server`` token check is served by :class:`tests.postmark_peer.PostmarkPeer`)."""

from __future__ import annotations

from typing import Any

from tests.peers import Upstream

__all__ = ["PASSWORD", "smtp_account"]

PASSWORD = "Upstream-Pa55word-7f3a"  #: the upstream's real password; tests grep for it


def smtp_account(up: Upstream, id: str = "agent1", **changes: Any) -> dict[str, Any]:
    """An account body for ``up`` (self-signed test certificate: ``verify_tls`` off)."""
    security = {None: "none", "starttls": "starttls", "implicit": "ssl"}[up.tls]
    body = {
        "id": id,
        "from": [f"{id}@example.com"],
        "smtp_host": "127.0.0.1",
        "smtp_port": up.port,
        "smtp_security": security,
        "smtp_auth": "plain",
        "smtp_username": "agent",
        "smtp_password": PASSWORD,
        "verify_tls": False,
        "auth_plaintext": up.tls is None,
    }
    body.update(changes)
    return body
