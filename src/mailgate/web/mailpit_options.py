"""What the Mailpit API (``/mailpit``) needs beyond the services, built by the
composition root at start: kept apart from :mod:`api_mailpit` so that building it
imports no FastAPI (the web app itself may be built later, on the first request)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.deliver.ssrf import NetGuard
from mailgate.inbox.release import Release
from mailgate.ingest.chaos import Chaos

__all__ = ["MailpitOptions"]


@dataclass(frozen=True, slots=True)
class MailpitOptions:
    """What the Mailpit API needs beyond the services; built by the composition root."""

    release: Release | None = None  #: None: release is not configured (400)
    relay_name: str = ""  #: where released mail goes, for ``/api/v1/webui``
    label: str = ""  #: ``Label`` of ``/api/v1/webui``
    database: str = ""  #: ``Database`` of ``/api/v1/info``
    database_size: Callable[[], int] = lambda: 0
    #: which addresses ``link-check`` may request
    link_guard: NetGuard = field(default_factory=NetGuard)
    chaos: Chaos = field(default_factory=Chaos)
    started: float = field(default_factory=time.monotonic)
