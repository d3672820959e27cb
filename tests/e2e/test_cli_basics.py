"""The command line itself: help and ``config``."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import RunCli, Workspace, run_together

pytestmark = pytest.mark.e2e


def _commands(help_text: str) -> dict[str, str]:
    """``{command: summary}`` from the "commands:" section of argparse help."""
    section = help_text.split("commands:", 1)[1]
    return dict(re.findall(r"^ {4}(\w+)\s+(\S.*)$", section, re.MULTILINE))


def test_help(cli: RunCli) -> None:
    top, dev = run_together(cli, ["--help"], ["dev", "--help"])

    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("usage: mailgate")
    commands = _commands(top.stdout)
    assert {"dev", "serve", "send"} <= commands.keys()
    assert "capture" in commands["dev"]
    assert "relay" in commands["serve"]

    assert dev.returncode == 0, dev.stderr
    assert dev.stdout.startswith("usage: mailgate dev")
    listed = set(re.findall(r"^\s+(--[\w-]+)", dev.stdout, re.MULTILINE))
    assert {"--smtp", "--http", "--db"} <= listed, dev.stdout


def test_config_merges_sources_and_hides_secrets(cli: RunCli, workspace: Workspace) -> None:
    """README: flags > MAILGATE_* env > .env > TOML file; secrets are never printed."""
    toml = workspace.root / "mailgate.toml"
    toml.write_text(
        'default_from = "toml@example.com"\n[delivery]\npool_size = 3\n[limits]\nmax_batch = 7\n',
        encoding="utf-8",
    )
    (workspace.root / ".env").write_text(
        "MAILGATE_DEFAULT_FROM=dotenv@example.com\nMAILGATE_DELIVERY__POOL_SIZE=4\n",
        encoding="utf-8",
    )
    result = cli(
        "config",
        "--config",
        str(toml),
        env={
            "MAILGATE_DELIVERY__POOL_SIZE": "5",
            "MAILGATE_RETRY__INITIAL_DELAY": "60",
            "MAILGATE_API_TOKEN": "tok-very-secret-1",
            "MAILGATE_RELAY_URL": "smtp://user:pw-very-secret-2@relay.example.com:2525",
        },
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["delivery"]["pool_size"] == 5  # env beats .env and TOML
    assert settings["default_from"] == "dotenv@example.com"  # .env beats TOML
    assert settings["limits"]["max_batch"] == 7  # TOML beats the default
    assert settings["retry"]["initial_delay"] == 60
    assert settings["retry"]["multiplier"] == 2  # untouched default
    assert "very-secret" not in result.stdout
    assert settings["api_token"] is not None  # set, but masked
    assert settings["relay_url"] is not None
