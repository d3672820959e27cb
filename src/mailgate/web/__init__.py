"""The web server: REST API (``/api/v1``), the Mailpit API, the admin UI, health.

Importing the package imports nothing: :mod:`mailgate.web.app` (FastAPI) is built by
the composition root through :class:`mailgate.web.lazy.LazyApp`, on the first HTTP
request under ``mailgate dev``; :mod:`services` and :mod:`mailpit_options` are what it
needs at start.
"""
