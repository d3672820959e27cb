"""The admin web UI (issue 11): Jinja2 pages with htmx, served by the API's web app.

Layout: :mod:`mount` (what the web app adds: routes, login answer, headers),
:mod:`pages` (routes), :mod:`guard` (sessions, credentials, CSRF), :mod:`headers` (CSP
and friends, the session cookie), :mod:`live` (SSE fragments), :mod:`dashboard`,
:mod:`chart` (inline SVG), :mod:`assets` (static files by content hash); ``templates/``
and ``static/`` ship in the package. docs/ui.md is the user's side.

Importing the package imports nothing: the composition root takes :mod:`options` and
:mod:`live` (no FastAPI, no Jinja2) at start, and the web app :mod:`mount` when it is
built, on the first HTTP request under ``mailgate dev``.
"""
