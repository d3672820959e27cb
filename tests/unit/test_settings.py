from pathlib import Path

import pytest
from pydantic import ValidationError

from mailgate.errors import ConfigError
from mailgate.settings import DeliverySettings, RetentionSettings, Settings, load_settings


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGATE_SMTP__PORT", "2526")
    monkeypatch.setenv("MAILGATE_RETRY__INITIAL_DELAY", "60")
    monkeypatch.setenv("MAILGATE_RELAY_URL", "smtp://u:secret@h:25")
    s = Settings()
    assert s.smtp.port == 2526 and s.smtp.host == "127.0.0.1"
    assert s.retry.policy().initial_delay == 60
    assert s.relay_url is not None and "secret" not in str(s.relay_url)


def test_flags_override_env_which_overrides_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text(
        'default_from = "file@example.com"\n[http]\nport = 9000\nhost = "127.0.0.2"\n'
    )
    monkeypatch.setenv("MAILGATE_HTTP__PORT", "9001")
    s = load_settings(config, http={"host": "127.0.0.3"})
    assert s.default_from == "file@example.com"
    assert s.http.port == 9001  # env beats file
    assert s.http.host == "127.0.0.3"  # flag beats env and file


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_open_api_beyond_loopback_refuses_to_start() -> None:
    Settings(http={"host": "127.0.0.1"}).check_safe()
    Settings(http={"host": "::1"}).check_safe()
    with pytest.raises(ConfigError, match="MAILGATE_API_TOKEN"):
        Settings(http={"host": "0.0.0.0"}).check_safe()
    Settings(http={"host": "0.0.0.0"}, api_token="t").check_safe()


def test_database_urls_are_redacted_for_output() -> None:
    from mailgate.store.database import driver_url, redact_url

    url = "postgresql://mailgate:hunter2@db.example.com:5432/mail"
    assert "hunter2" not in redact_url(url) and "db.example.com:5432/mail" in redact_url(url)
    assert driver_url(url) == "postgresql+asyncpg://mailgate:hunter2@db.example.com:5432/mail"
    assert driver_url("sqlite:////tmp/x.sqlite3") == "sqlite+pysqlite:////tmp/x.sqlite3"
    # any SQLite driver named: the standard sqlite3 runs it (in mailgate's threads)
    assert driver_url("sqlite+aiosqlite:////tmp/x.sqlite3") == "sqlite+pysqlite:////tmp/x.sqlite3"
    with pytest.raises(ConfigError, match="unsupported database URL"):
        driver_url("mysql://u:p@h/db")


def test_finished_mail_is_kept_seven_days_by_default() -> None:
    """Issue 7 and docs/webhooks.md: messages and their events go 7 days after the last."""
    assert RetentionSettings().days == 7


@pytest.mark.parametrize("seconds", [0, -5, 0.5])
def test_a_delivery_lease_that_ends_at_once_refuses_to_start(seconds: float) -> None:
    """``delivery.lease_seconds`` 0 (or less) was taken: every lease had expired when it was
    taken, so two ``serve`` processes sent the same messages up to three times each."""
    with pytest.raises(ValidationError, match="lease_seconds"):
        DeliverySettings(lease_seconds=seconds)
    assert DeliverySettings(lease_seconds=1).lease_seconds == 1
