"""What importing mailgate costs: the composition root and the CLI load no web stack
(FastAPI, Starlette, Jinja2) and no httpx; ``mailgate dev`` builds its web app on the
first request (mailgate.web.lazy), and a capture server needs httpx only for handler
URLs, webhooks and the like. Checked in a fresh interpreter: this one has them all."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mailgate

#: what an idle capture server does not use (docs/benchmarks.md, "What the idle RSS is made of")
NOT_AT_START = ("fastapi", "starlette", "jinja2", "httpx", "httpcore", "aiosqlite", "cryptography")
#: SQLAlchemy's parts a SQLite process does not use (docs/benchmarks.md, issue 9)
NOT_AT_START_SQLALCHEMY = (
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql",
)

SCRIPT = """
import json, sys
import mailgate, mailgate.settings, mailgate.app, mailgate.cli
mailgate.Gateway, mailgate.Settings
print(json.dumps(sorted(sys.modules)))
"""


def test_the_app_and_the_cli_import_no_web_stack_and_no_httpx() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout))
    loaded = {name.partition(".")[0] for name in modules}
    assert "mailgate" in loaded and "sqlalchemy" in loaded  # the script did import
    assert loaded.isdisjoint(NOT_AT_START), sorted(loaded & set(NOT_AT_START))
    assert modules.isdisjoint(NOT_AT_START_SQLALCHEMY), sorted(
        modules & set(NOT_AT_START_SQLALCHEMY)
    )


def test_the_public_names_are_imported_on_first_use() -> None:
    from mailgate.app import Gateway, Mode
    from mailgate.settings import Settings, load_settings

    assert (mailgate.Gateway, mailgate.Mode) == (Gateway, Mode)
    assert (mailgate.Settings, mailgate.load_settings) == (Settings, load_settings)
    assert set(mailgate.__all__) <= set(dir(mailgate))
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = mailgate.Nothing
