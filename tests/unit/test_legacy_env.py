"""Issue 8: the old agent's and the Trigger Email extension's variables, from the
environment and from ``.env`` in the working directory, as mailgate settings below
the ``MAILGATE_*`` names; ``mailgate config`` names where each value came from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailgate.cli import _parser, settings_errors
from mailgate.deliver.relay import RelayConfig, Security, parse_relay_url
from mailgate.legacy_env import LEGACY_NAMES, map_legacy
from mailgate.settings import Settings, load_settings, setting_origins

PASSWORD = "p@ss:w/rd %20 never-print-me"  #: every character a URL must encode


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of the developer's own leaks in; cwd is an empty directory (no .env)."""
    for name in [*LEGACY_NAMES, *(n for n in os.environ if n.startswith("MAILGATE_"))]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dotenv(text: str) -> None:
    Path(".env").write_text(text, encoding="utf-8")


def relay(settings: Settings) -> RelayConfig:
    assert settings.relay_url is not None
    return parse_relay_url(settings.relay_url.get_secret_value())


def mapped(variables: dict[str, str]) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    return map_legacy(variables, Settings)


def field(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


# --- each variable ---


@pytest.mark.parametrize(
    ("name", "value", "path", "expected"),
    [
        (
            "FIREBASE_SERVICE_ACCOUNT_PATH",
            "/etc/sa.json",
            "firestore.credentials",
            Path("/etc/sa.json"),
        ),
        ("POLL_INTERVAL", "2.5", "firestore.poll_interval", 2.5),
        ("MAX_RETRY_COUNT", "7", "firestore.max_retry_count", 7),
        ("ADMIN_PORT", "8080", "http.port", 8080),
        ("ADMIN_USER", "root", "admin_user", "root"),
        (
            "DEFAULT_FROM",
            "App <app@example.com>",
            "firestore.default_from",
            "App <app@example.com>",
        ),
        ("DEFAULT_FROM", "App <app@example.com>", "default_from", "App <app@example.com>"),
        ("DEFAULT_REPLY_TO", "help@example.com", "firestore.default_reply_to", "help@example.com"),
        ("MAIL_COLLECTION", "emails", "firestore.collection", "emails"),
        ("USERS_COLLECTION", "people", "firestore.users_collection", "people"),
        ("TEMPLATES_COLLECTION", "tpl", "firestore.templates_collection", "tpl"),
        ("TTL_EXPIRE_TYPE", "week", "firestore.ttl_expire_type", "week"),
        ("TTL_EXPIRE_VALUE", "2", "firestore.ttl_expire_value", 2),
        ("FIREBASE_DATABASE_URL", "https://acme.firebaseio.com", "firestore.project_id", "acme"),
    ],
)
def test_each_variable_from_env_and_from_dotenv(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, path: str, expected: Any
) -> None:
    monkeypatch.setenv(name, value)
    assert field(Settings(), path) == expected
    assert setting_origins()[path] == f"legacy {name} (env)"
    monkeypatch.delenv(name)
    assert field(Settings(), path) != expected
    dotenv(f"{name}={value}\n")
    assert field(Settings(), path) == expected
    assert setting_origins()[path] == f"legacy {name} (.env)"


def test_admin_pass_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PASS", PASSWORD)
    settings = Settings()
    assert settings.admin_pass is not None
    assert settings.admin_pass.get_secret_value() == PASSWORD
    assert PASSWORD not in settings.model_dump_json() and PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("url", "project"),
    [
        ("https://acme-prod.firebaseio.com", "acme-prod"),
        ("https://acme-prod.firebaseio.com/", "acme-prod"),
        ("https://acme-prod-default-rtdb.firebaseio.com", "acme-prod"),
        ("https://acme-prod-default-rtdb.europe-west1.firebasedatabase.app", "acme-prod"),
    ],
)
def test_database_url_gives_the_project(url: str, project: str) -> None:
    values, _ = mapped({"FIREBASE_DATABASE_URL": url})
    assert values == {"firestore": {"project_id": project}}


# --- the default account ---


def test_old_agent_dotenv_is_the_default_account() -> None:
    dotenv(
        "SMTP_SERVER=smtp.example.com\nSMTP_PORT=587\nSMTP_USERNAME=app@example.com\n"
        f"SMTP_PASSWORD='{PASSWORD}'\nSMTP_USE_TLS=true\n"
        "SMTP_FROM_EMAIL=noreply@example.com\nSMTP_FROM_NAME=Acme, Inc.\n"
    )
    settings = Settings()
    account = relay(settings)
    assert (account.host, account.port, account.security) == (
        "smtp.example.com",
        587,
        Security.STARTTLS,
    )
    assert (account.username, account.password) == ("app@example.com", PASSWORD)
    assert account.default_from == '"Acme, Inc." <noreply@example.com>'
    assert PASSWORD not in settings.model_dump_json()
    assert setting_origins()["relay_url"] == (
        "legacy SMTP_SERVER, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_USE_TLS,"
        " SMTP_FROM_EMAIL, SMTP_FROM_NAME (.env)"
    )


@pytest.mark.parametrize(
    ("port", "use_tls", "security", "expected_port"),
    [
        ("587", "true", Security.STARTTLS, 587),
        ("587", "false", Security.PLAIN, 587),
        (None, "true", Security.STARTTLS, 587),
        (None, None, Security.PLAIN, 25),
        ("465", "true", Security.TLS, 465),
        ("465", "false", Security.TLS, 465),  # 465 only speaks implicit TLS
        ("25", "1", Security.STARTTLS, 25),
    ],
)
def test_use_tls_is_decided_with_the_port(
    port: str | None, use_tls: str | None, security: Security, expected_port: int
) -> None:
    variables = {"SMTP_SERVER": "smtp.example.com"}
    variables |= {"SMTP_PORT": port} if port else {}
    variables |= {"SMTP_USE_TLS": use_tls} if use_tls else {}
    values, _ = mapped(variables)
    account = parse_relay_url(values["relay_url"])
    assert (account.security, account.port) == (security, expected_port)


def test_ipv6_server() -> None:
    values, _ = mapped({"SMTP_SERVER": "2001:db8::1", "SMTP_PORT": "2525"})
    account = parse_relay_url(values["relay_url"])
    assert (account.host, account.port) == ("2001:db8::1", 2525)


@pytest.mark.parametrize(
    ("uri", "security", "port"),
    [
        ("smtps://app%40example.com@smtp.example.com:465", Security.TLS, 465),
        ("smtp://app%40example.com@smtp.example.com:587", Security.PLAIN, 587),
        ("smtp://app%40example.com@smtp.example.com:465", Security.TLS, 465),  # as nodemailer
    ],
)
def test_extension_connection_uri_takes_smtp_password(
    monkeypatch: pytest.MonkeyPatch, uri: str, security: Security, port: int
) -> None:
    monkeypatch.setenv("SMTP_CONNECTION_URI", uri)
    dotenv(f"SMTP_PASSWORD='{PASSWORD}'\n")
    account = relay(Settings())
    assert (account.security, account.port, account.host) == (security, port, "smtp.example.com")
    assert (account.username, account.password) == ("app@example.com", PASSWORD)
    assert (
        setting_origins()["relay_url"] == "legacy SMTP_CONNECTION_URI (env); SMTP_PASSWORD (.env)"
    )


def test_smtp_password_replaces_the_uri_password_as_the_extension_does() -> None:
    uri = "smtps://user:old%20pw@smtp.example.com"
    values, used = mapped({"SMTP_CONNECTION_URI": uri, "SMTP_PASSWORD": PASSWORD})
    assert parse_relay_url(values["relay_url"]).password == PASSWORD
    values, used = mapped({"SMTP_CONNECTION_URI": uri})
    assert parse_relay_url(values["relay_url"]).password == "old pw"
    assert used == {"relay_url": ("SMTP_CONNECTION_URI",)}


def test_sender_without_a_relay_is_the_default_sender() -> None:
    values, used = mapped({"SMTP_FROM_EMAIL": "app@example.com", "SMTP_FROM_NAME": "App"})
    assert values == {"default_from": "App <app@example.com>"}
    assert used == {"default_from": ("SMTP_FROM_EMAIL", "SMTP_FROM_NAME")}


# --- precedence ---


def test_mailgate_names_win_over_legacy_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INTERVAL", "5")
    monkeypatch.setenv("MAILGATE_FIRESTORE__POLL_INTERVAL", "6")
    monkeypatch.setenv("SMTP_SERVER", "legacy.example.com")
    monkeypatch.setenv("MAILGATE_RELAY_URL", "smtp://mailgate.example.com")
    dotenv("MAILGATE_HTTP__PORT=9001\nADMIN_PORT=9002\nMAIL_COLLECTION=legacy\n")
    monkeypatch.setenv("MAILGATE_FIRESTORE", '{"collection": "json"}')
    settings = Settings()
    assert settings.firestore.poll_interval == 6  # env MAILGATE_ over env legacy
    assert relay(settings).host == "mailgate.example.com"
    assert settings.http.port == 9001  # .env MAILGATE_ over .env legacy
    assert settings.firestore.collection == "json"
    origins = setting_origins()
    assert origins["firestore.poll_interval"] == "env MAILGATE_FIRESTORE__POLL_INTERVAL"
    assert origins["relay_url"] == "env MAILGATE_RELAY_URL"
    assert origins["http.port"] == ".env MAILGATE_HTTP__PORT"
    assert origins["firestore.collection"] == "env MAILGATE_FIRESTORE"


@pytest.mark.parametrize("name", ["DEFAULT_FROM", "ADMIN_USER"])
def test_a_mailgate_name_whose_setting_is_named_like_a_legacy_variable(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """MAILGATE_DEFAULT_FROM is setting default_from; the legacy DEFAULT_FROM is not it."""
    path = name.lower()
    dotenv(f"MAILGATE_{name}=a@example.com\n")
    assert getattr(Settings(), path) == "a@example.com"
    monkeypatch.setenv(name, "legacy@example.com")
    assert getattr(Settings(), path) == "a@example.com"
    assert setting_origins()[path] == f".env MAILGATE_{name}"


def test_mailgate_dotenv_wins_over_legacy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PORT", "9002")
    dotenv("MAILGATE_HTTP__PORT=9001\n")
    assert Settings().http.port == 9001


def test_legacy_env_wins_over_legacy_dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PORT", "9002")
    dotenv("ADMIN_PORT=9003\n")
    assert Settings().http.port == 9002
    assert setting_origins()["http.port"] == "legacy ADMIN_PORT (env)"


def test_flags_win_and_the_config_file_loses(monkeypatch: pytest.MonkeyPatch) -> None:
    toml = Path("mailgate.toml")
    toml.write_text('[firestore]\ncollection = "toml"\nusers_collection = "toml"\n')
    monkeypatch.setenv("MAIL_COLLECTION", "legacy")
    monkeypatch.setenv("SMTP_SERVER", "legacy.example.com")
    settings = load_settings(toml, relay_url="smtp://flag.example.com")
    assert relay(settings).host == "flag.example.com"
    assert settings.firestore.collection == "legacy"  # the environment beats the file
    assert settings.firestore.users_collection == "toml"
    origins = setting_origins(toml, relay_url="smtp://flag.example.com")
    assert origins["relay_url"] == "flag"
    assert origins["firestore.collection"] == "legacy MAIL_COLLECTION (env)"
    assert origins["firestore.users_collection"] == f"config file {toml}"


def test_origins_list_only_what_was_given_in_settings_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert setting_origins() == {}
    monkeypatch.setenv("MAX_RETRY_COUNT", "4")
    monkeypatch.setenv("MAILGATE_DB_URL", "sqlite:///x.sqlite3")
    monkeypatch.setenv("MAILGATE_HTTP__HOST", "127.0.0.2")
    assert list(setting_origins()) == ["db_url", "http.host", "firestore.max_retry_count"]


def test_empty_legacy_values_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv("ADMIN_PASS=\nSMTP_SERVER=\nPOLL_INTERVAL=\n")
    settings = Settings()
    assert settings.admin_pass is None and settings.relay_url is None
    assert setting_origins() == {}


# --- bad values ---


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        ({"POLL_INTERVAL": "abc"}, "POLL_INTERVAL: Input should be a valid number"),
        ({"POLL_INTERVAL": "-1"}, "POLL_INTERVAL: Input should be greater than 0"),
        ({"MAX_RETRY_COUNT": "x"}, "MAX_RETRY_COUNT: Input should be a valid integer"),
        ({"ADMIN_PORT": "http"}, "ADMIN_PORT: Input should be a valid integer"),
        ({"TTL_EXPIRE_TYPE": "fortnight"}, "TTL_EXPIRE_TYPE: Input should be 'never'"),
        ({"FIREBASE_DATABASE_URL": "https://example.com"}, "FIREBASE_DATABASE_URL: expected"),
        ({"SMTP_SERVER": "h", "SMTP_PORT": "smtp"}, "SMTP_PORT: must be a port number"),
        ({"SMTP_SERVER": "h", "SMTP_PORT": "70000"}, "SMTP_PORT: must be a port number"),
        ({"SMTP_SERVER": "h", "SMTP_USE_TLS": "maybe"}, "SMTP_USE_TLS: must be true or false"),
        ({"SMTP_SERVER": "h:587"}, "SMTP_SERVER: must be a host name or address, without a port"),
        ({"SMTP_USERNAME": "u"}, "SMTP_USERNAME: needs SMTP_SERVER"),
        ({"SMTP_PASSWORD": PASSWORD}, "SMTP_PASSWORD: needs SMTP_SERVER"),
        ({"SMTP_SERVER": "h", "SMTP_PASSWORD": PASSWORD}, "SMTP_PASSWORD: needs SMTP_USERNAME"),
        ({"SMTP_SERVER": "h", "SMTP_FROM_EMAIL": "nope"}, "SMTP_FROM_EMAIL: must be an email"),
        ({"SMTP_FROM_NAME": "App"}, "SMTP_FROM_NAME: needs SMTP_FROM_EMAIL"),
        (
            {"SMTP_CONNECTION_URI": "smtps://h", "SMTP_SERVER": "h"},
            "SMTP_SERVER: set either SMTP_CONNECTION_URI or SMTP_SERVER",
        ),
        (
            {"SMTP_CONNECTION_URI": "smtp://u:never-print-me@h?pool=true"},
            "SMTP_CONNECTION_URI: relay URL parameter 'pool' is not one of",
        ),
        ({"SMTP_CONNECTION_URI": "http://h"}, "SMTP_CONNECTION_URI: relay URL scheme 'http'"),
        ({"SMTP_CONNECTION_URI": "smtps://h", "SMTP_PASSWORD": PASSWORD}, "names no user"),
    ],
)
def test_bad_values_name_the_legacy_variable_never_the_value(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], line: str
) -> None:
    dotenv("".join(f"{name}='{value}'\n" for name, value in variables.items()))
    with pytest.raises(ValidationError) as caught:
        Settings()
    shown = settings_errors(caught.value)
    assert line in shown
    assert "(legacy name of " in shown
    assert "never-print-me" not in shown + str(caught.value)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        mapped({"POLL_INTERVAL": "abc", "ADMIN_PORT": "x", "SMTP_PORT": "1"})
    names = [error["loc"][0] for error in caught.value.errors()]
    assert names == ["POLL_INTERVAL", "ADMIN_PORT", "SMTP_PORT"]


def test_other_unprefixed_dotenv_names_are_still_unknown_settings() -> None:
    dotenv("SMTP_SERVER=h\nSMPT_SERVER=typo\n")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "smpt_server: unknown setting" in settings_errors(caught.value)


# --- LOG_LEVEL, the CLI's ---


def test_log_level_from_legacy_env_or_dotenv_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    def level() -> str:
        return str(_parser().parse_args(["serve"]).log_level)

    assert level() == "INFO"
    dotenv("LOG_LEVEL=warn\n")
    assert level() == "WARNING"
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert level() == "DEBUG"
    monkeypatch.setenv("MAILGATE_LOG_LEVEL", "Error")
    assert level() == "ERROR"
    assert _parser().parse_args(["serve", "--log-level", "info"]).log_level == "INFO"


def test_bad_log_level_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["serve"])
    assert exit_.value.code == 2
    assert "LOG_LEVEL" in capsys.readouterr().err
