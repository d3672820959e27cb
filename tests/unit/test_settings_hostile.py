"""Hostile setting values: each is refused with the setting's name (exit 2 in the CLI),
never a traceback at start-up or a gateway that runs and misbehaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailgate.cli import main, settings_errors
from mailgate.legacy_env import LEGACY_NAMES
from mailgate.settings import Settings


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of the developer's own leaks in; cwd is an empty directory (no .env)."""
    for name in [*LEGACY_NAMES, *(n for n in os.environ if n.startswith("MAILGATE_"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    """The error lines of ``Settings()`` with the environment variable ``name`` set."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return settings_errors(caught.value)


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("MAILGATE_HTTP__PORT", "http.port"),
        ("MAILGATE_HTTP__METRICS_PORT", "http.metrics_port"),
        ("MAILGATE_SMTP__PORT", "smtp.port"),
        ("MAILGATE_SMTP__TLS_PORT", "smtp.tls_port"),
    ],
)
@pytest.mark.parametrize("value", ["65536", "-1"])
def test_a_port_outside_0_to_65535_is_a_setting_error(
    monkeypatch: pytest.MonkeyPatch, name: str, setting: str, value: str
) -> None:
    """It was taken, and the server's bind() raised OverflowError: a traceback at start."""
    assert f"{setting}: " in refused(monkeypatch, name, value)


def test_a_flag_port_outside_the_range_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    capsys.readouterr()
    assert main(["serve", "--http", "127.0.0.1:70000"]) == 2
    err = capsys.readouterr().err
    assert "http.port: " in err and "Traceback" not in err
