"""The web server: REST API (``/api/v1``), health, and (later) the admin UI."""

from mailgate.web.app import Services, create_app, create_metrics_app

__all__ = ["Services", "create_app", "create_metrics_app"]
