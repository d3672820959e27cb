"""Firestore clients from the settings, as Google's client libraries would build them.

``FIRESTORE_EMULATOR_HOST`` set: the emulator, with anonymous credentials (the client
library connects to it without TLS). Otherwise a service-account file (the setting,
else ``GOOGLE_APPLICATION_CREDENTIALS``), else the environment's default credentials.
The project is the setting, else the credentials file's, else ``GOOGLE_CLOUD_PROJECT``.

The listener gets a client (and a gRPC channel) of its own for each subscription, so a
stream opened again after a broken one starts on a fresh connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import firestore
from google.oauth2 import service_account

from mailgate.errors import ConfigError
from mailgate.settings import FirestoreSettings

__all__ = ["clients"]


def clients(
    s: FirestoreSettings,
) -> tuple[firestore.AsyncClient, Callable[[], firestore.AsyncClient]]:
    """The client, and a factory of listener clients (one per subscription)."""
    credentials, project = _credentials(s)
    kwargs: dict[str, Any] = {"project": project, "database": s.database}
    if credentials is not None:
        kwargs["credentials"] = credentials

    def listener() -> firestore.AsyncClient:
        return firestore.AsyncClient(**kwargs)

    return firestore.AsyncClient(**kwargs), listener


def _credentials(s: FirestoreSettings) -> tuple[Credentials | None, str]:
    project = (
        s.project_id or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
    )
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        return AnonymousCredentials(), project or "demo-mailgate"
    path = s.credentials or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        try:
            credentials = service_account.Credentials.from_service_account_file(str(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"firestore credentials {path}: {exc}") from None
        project = s.project_id or credentials.project_id or project
    else:
        credentials = None  # the environment's default credentials (a GCP machine)
    if not project:
        raise ConfigError(
            "firestore: no project: set MAILGATE_FIRESTORE__PROJECT_ID (or"
            " GOOGLE_CLOUD_PROJECT, or use a service-account file, which names it)"
        )
    return credentials, project
