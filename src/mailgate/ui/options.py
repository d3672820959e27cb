"""What the composition root hands the admin UI, beyond the web services."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import SecretStr

from mailgate.store.auth_failures import AuthFailureStore
from mailgate.store.ended_sessions import EndedSessionStore
from mailgate.ui.live import Pulse

__all__ = ["SmtpStatus", "UiOptions"]


@dataclass(frozen=True, slots=True)
class SmtpStatus:
    mode: str  #: "capture" or "submission"
    address: str  #: host:port it listens on
    open_connections: int
    listening: bool


@dataclass(frozen=True, slots=True)
class UiOptions:
    """``admin_user``/``admin_pass``: Basic Auth and the login form (both or neither);
    ``secret_key``: the gateway's, from which the session key is derived (random per
    process without one); ``smtp``: the SMTP server's state (None: no server);
    ``outbox``: each outbox consumer's backlog; ``pulse``: poked when something the
    dashboard shows changed; ``refresh``: seconds between renders of a live page
    otherwise; ``login_failures`` within ``login_window`` seconds from one client
    address, and it is refused (429) until the oldest is that old; ``failures``: where
    they are counted, shared by every process on the store (None: in this one only);
    ``ended``: the sessions logged out, refused by every process on the store (None: by
    this one only)."""

    admin_user: str | None = None
    admin_pass: SecretStr | None = None
    secret_key: SecretStr | None = None
    smtp: Callable[[], SmtpStatus | None] | None = None
    outbox: Callable[[], Awaitable[dict[str, int]]] | None = None
    pulse: Pulse = field(default_factory=Pulse)
    refresh: float = 3.0
    login_failures: int = 5
    login_window: float = 60.0
    failures: AuthFailureStore | None = None
    ended: EndedSessionStore | None = None
    started: float = field(default_factory=time.monotonic)  #: for the uptime
