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


# --- files and text that cannot be read as settings ---


def config_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``mailgate …``'s one-line error; it must exit 2, without a traceback."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mailgate: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"a = 1\na = 2\n", "not valid TOML: Cannot overwrite a value (at line 2"),
        (b"[http\n", "not valid TOML"),
        (b"\xff\xfe[http]\n", "not UTF-8 text"),
        (b"deep = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    ],
)
def test_a_config_file_that_is_not_toml_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, reason: str
) -> None:
    """tomllib's errors went out of pydantic-settings as they were: a traceback."""
    path = tmp_path / "mailgate.toml"
    path.write_bytes(content)
    for command in ("config", "serve"):
        err = config_error(capsys, command, "--config", str(path))
        assert f"config file {path}: {reason}" in err


def test_a_dotenv_that_is_not_utf8_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """python-dotenv's UnicodeDecodeError was a traceback (before any argument was read)."""
    Path(".env").write_bytes(b"MAILGATE_API_TOKEN=s\xe9cret-never-shown\n")
    err = config_error(capsys, "serve")
    assert ".env is not UTF-8 text" in err and "never-shown" not in err


@pytest.mark.parametrize("where", ["env", ".env"])
def test_a_section_given_as_broken_json_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """pydantic-settings' SettingsError (the JSON's ValueError) was a traceback."""
    value = '{"app": "hunter2-never-shown"'
    if where == "env":
        monkeypatch.setenv("MAILGATE_SMTP__USERS", value)
    else:
        Path(".env").write_text(f"MAILGATE_SMTP__USERS='{value}'\n", encoding="utf-8")
    err = config_error(capsys, "config")
    assert "smtp: not valid JSON in " in err and "hunter2" not in err


# --- the dispatcher's numbers ---


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("pool_size", "0"),  # no connection ever: a core spun and nothing was sent
        ("pool_size", "-1"),
        ("concurrency", "0"),  # no slot: a retry or scheduled message was never leased
        ("lease_seconds", "nan"),  # every lease failed with a traceback, each poll
        ("lease_seconds", "inf"),
        ("lease_seconds", "0"),
        ("poll_interval", "0"),  # the queue was scanned without a pause
        ("poll_interval", "-1"),
        ("smtp_timeout", "0"),  # every send timed out before the greeting
        ("account_recheck", "nan"),
        ("pool_idle_timeout", "inf"),
    ],
)
def test_a_dispatcher_setting_that_stops_delivery_is_refused(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    name = f"MAILGATE_DELIVERY__{setting.upper()}"
    assert f"delivery.{setting}: " in refused(monkeypatch, name, value)


# --- misspelt names inside a section ---


def test_an_unknown_name_in_a_section_is_refused_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A section ignored names it did not know: ``[delivery] concurency = 4`` ran with
    16 without a word, while a misspelt top-level name was already an error."""
    assert "http.prot: unknown setting (did you mean http.port?)" in refused(
        monkeypatch, "MAILGATE_HTTP__PROT", "9999"
    )
    config = tmp_path / "mailgate.toml"
    config.write_text("[delivery]\nconcurency = 4\n[smtp.pool]\nworkers = 2\n", encoding="utf-8")
    monkeypatch.delenv("MAILGATE_HTTP__PROT")
    assert main(["config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "delivery.concurency: unknown setting (did you mean delivery.concurrency?)" in err
    assert "smtp.pool.workers: unknown setting" in err


# --- database URLs and databases that cannot be used ---


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("notaurl", "the database URL cannot be parsed"),  # sqlalchemy's ArgumentError
        ("postgresql://u:Hunter2-pw@db:port/mail", "the database URL cannot be parsed"),
        ("sqlite://", "an in-memory SQLite database cannot work"),  # TypeError(max_overflow)
        ("sqlite:///:memory:", "an in-memory SQLite database cannot work"),
        ("sqlite:///file::memory:?cache=shared", "an in-memory SQLite database cannot work"),
    ],
)
def test_a_database_url_that_cannot_work_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, reason: str
) -> None:
    """Each was a traceback from SQLAlchemy, in every command that opens the store."""
    monkeypatch.setenv("MAILGATE_DB_URL", url)
    for argv in (["serve", "--http", "127.0.0.1:0"], ["queue", "list"]):
        err = config_error(capsys, *argv)
        assert reason in err and "Hunter2" not in err
    assert main(["config"]) == 0  # shows the settings, the URL hidden when unparsable
    assert "Hunter2" not in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["serve", "--http", "127.0.0.1:0"], ["queue", "list"],
                                  ["accounts", "list"], ["db", "upgrade"]])  # fmt: skip
def test_a_database_that_cannot_be_opened_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A SQLite file in a directory that does not exist (or a PostgreSQL server that
    refuses): StoreUnavailable went out of main as a traceback."""
    db = tmp_path / "missing" / "mailgate.sqlite3"
    assert main([*argv, "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailgate: error: cannot use the database: ") and err.count("\n") == 1


# --- tenants: the store's columns hold 64 characters ---


@pytest.mark.parametrize("tenant", ["t" * 65, "a\x1b[31mb", ""])
def test_a_tenant_the_store_cannot_hold_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tenant: str,
) -> None:
    """``tokens add``/``smtp-users add --tenant`` of 65 characters failed PostgreSQL's
    insert with a traceback (VARCHAR(64)) and was kept on SQLite; firestore.tenant of 65
    failed every document's message on PostgreSQL. Control characters went in as well."""
    db = str(tmp_path / "mailgate.sqlite3")
    for argv in (
        ["tokens", "add", "--tenant", tenant],
        ["smtp-users", "add", "--tenant", tenant, "bob"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--db", db])
        assert exit_.value.code == 2
        assert (
            "argument --tenant: a tenant is 1 to 64 printable characters" in capsys.readouterr().err
        )
    assert "firestore.tenant: " in refused(
        monkeypatch, "MAILGATE_FIRESTORE__TENANT", tenant or "\x7f"
    )


# --- Firestore collection paths ---


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("collection", "a/b"),  # a document's path: a traceback at start
        ("collection", ""),  # each of these failed every poll, for ever, with a warning
        ("collection", "a//b"),
        ("collection", "__mail__"),
        ("users_collection", ".."),
        ("templates_collection", "tenants/acme"),
    ],
)
def test_a_collection_path_firestore_refuses_is_a_setting_error(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    name = f"MAILGATE_FIRESTORE__{setting.upper()}"
    assert f"firestore.{setting}: Value error, a collection path" in refused(
        monkeypatch, name, value
    )


def test_collection_paths_firestore_takes_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGATE_FIRESTORE__COLLECTION", "tenants/acme/mail")
    monkeypatch.setenv("MAILGATE_FIRESTORE__TEMPLATES_COLLECTION", "")
    firestore = Settings().firestore
    assert (firestore.collection, firestore.templates_collection) == ("tenants/acme/mail", "")


# --- limits that would refuse every message ---


@pytest.mark.parametrize(
    "name",
    [
        "MAILGATE_LIMITS__MAX_MESSAGE_SIZE",  # 413 "over the limit of -1000 bytes" for all
        "MAILGATE_LIMITS__MAX_REQUEST_BODY",
        "MAILGATE_LIMITS__MAX_BATCH",
        "MAILGATE_LIMITS__MAX_RECIPIENTS",  # "1 recipients, over the limit of -5"
        "MAILGATE_LIMITS__MAX_SUBJECT_LENGTH",
        "MAILGATE_LIMITS__MAX_HEADER_VALUE",
        "MAILGATE_LIMITS__MAX_HEADERS",
        "MAILGATE_LIMITS__MAX_METADATA_DEPTH",
        "MAILGATE_LIMITS__MAX_METADATA_BYTES",
        "MAILGATE_ATTACHMENTS__MAX_ATTACHMENT_SIZE",
        "MAILGATE_ATTACHMENTS__MAX_MESSAGE_SIZE",
        "MAILGATE_ATTACHMENTS__FETCH_TIMEOUT",
        "MAILGATE_POSTMARK__TIMEOUT",
    ],
)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_limit_that_refuses_every_message_is_a_setting_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    setting = name.removeprefix("MAILGATE_").lower().replace("__", ".")
    assert f"{setting}: " in refused(monkeypatch, name, value)


# --- webhook and report retries ---


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILGATE_WEBHOOKS__RETRY_DELAYS", "[-1]"),  # 66 POSTs in 3 s to a failing receiver
        ("MAILGATE_WEBHOOKS__RETRY_DELAYS", "[5, 0]"),
        ("MAILGATE_WEBHOOKS__RETRY_DELAYS", "[NaN]"),  # one POST, then never retried
        ("MAILGATE_WEBHOOKS__DEAD_AFTER", "inf"),  # OverflowError at each failure
        ("MAILGATE_REPORTS__DEAD_AFTER", "inf"),
        ("MAILGATE_REPORTS__RETRY_MAX_DELAY", "inf"),
    ],
)
def test_a_retry_schedule_that_cannot_work_is_a_setting_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    setting = name.removeprefix("MAILGATE_").lower().replace("__", ".")
    assert refused(monkeypatch, name, value).startswith(f"  {setting}")


# --- Firestore times ---


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILGATE_FIRESTORE__LEASE_SECONDS", "inf"),  # every lease an OverflowError, for ever
        ("MAILGATE_FIRESTORE__LEASE_SECONDS", "1e12"),  # past datetime's year 9999
        ("MAILGATE_FIRESTORE__TTL_EXPIRE_VALUE", "1000000000"),  # OverflowError at start
    ],
)
def test_a_firestore_time_past_any_date_is_a_setting_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("MAILGATE_FIRESTORE__TTL_EXPIRE_TYPE", "year")
    setting = name.removeprefix("MAILGATE_").lower().replace("__", ".")
    assert setting in refused(monkeypatch, name, value)
