"""RuntimeSettings: settings an operator changes while the gateway runs (issue 11).

A few settings take effect without a restart: the Firestore poll interval, the log
level, the retry schedule, chaos, retention and the inbox's limits. Each has a dotted
name (``retry.initial_delay``, ``inbox.max_messages``); a change is validated by the
same model as the configured value (a bad one is refused whole, naming the setting),
written to the store first (write-through) and then applied to the running parts.
At start the stored changes are merged over the configured defaults; a process also
picks up a change made through another process sharing the database (:meth:`refresh`,
every few seconds). Setting a name to ``None`` forgets the change: the configured value
applies again.

Everything else is boot-only: :func:`boot_view` shows it, with secrets redacted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from mailgate.clock import Clock
from mailgate.errors import InvalidInput
from mailgate.settings import Settings
from mailgate.store.runtime_settings import RuntimeSettingsStore, Version

__all__ = ["LOG_LEVELS", "RUNTIME", "RuntimeSettings", "boot_view", "merged"]

log = logging.getLogger(__name__)

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")

#: the settings changed at run time: each a field of a section of :class:`Settings`
#: (``log_level`` is the process's, not a setting: the CLI's ``--log-level`` is its default)
RUNTIME: Final = (
    "firestore.poll_interval",
    "log_level",
    "retry.initial_delay",
    "retry.multiplier",
    "retry.max_delay",
    "retry.max_age",
    "retry.jitter",
    "retry.max_attempts",
    "delivery.pace_burst",
    "retention.days",
    "retention.interval",
    "inbox.max_messages",
    "inbox.max_age_days",
    "smtp.chaos",
)

#: applies the effective settings (and log level) to the running parts
Apply = Callable[[Settings, str | None], None]


def merged(base: Settings, changes: Mapping[str, Any]) -> Settings:
    """``base`` with ``changes`` (dotted names of :data:`RUNTIME`) in it, each section
    validated by its own model; ``InvalidInput`` names the first that is wrong."""
    sections: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        if name not in RUNTIME:
            raise InvalidInput(f"{name}: not a setting changed at run time ({_names()})")
        if name == "log_level":
            _log_level(value)
        else:
            section, _, field = name.partition(".")
            sections.setdefault(section, {})[field] = value
    update: dict[str, BaseModel] = {}
    for section, fields in sections.items():
        current: BaseModel = getattr(base, section)
        try:
            update[section] = type(current).model_validate({**current.model_dump(), **fields})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in (section, *error["loc"]))
            raise InvalidInput(f"{where}: {error['msg']}") from None
    return base.model_copy(update=update)


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise InvalidInput(f"log_level: one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _names() -> str:
    return ", ".join(RUNTIME)


class RuntimeSettings:
    def __init__(
        self,
        store: RuntimeSettingsStore,
        clock: Clock,
        configured: Settings,
        *,
        apply: Apply | None = None,
    ) -> None:
        """``configured``: the settings from files and the environment, before any
        change; ``apply``: pushes the effective settings into the running parts."""
        self.store = store
        self.clock = clock
        self.configured = configured
        self.effective = configured
        self.log_level: str | None = None  #: None: the process's own (``--log-level``)
        self.changed: dict[str, Any] = {}  #: what is stored, by dotted name
        self.apply = apply
        self._version: Version | None = None

    async def load(self) -> Settings:
        """Read the stored changes and return the effective settings (applied too, once
        ``apply`` is set). A stored value this version cannot use is skipped, logged."""
        self._version = await self.store.version()
        stored = await self.store.load()
        good: dict[str, Any] = {}
        effective = self.configured
        for name, value in stored.items():
            try:
                effective = merged(self.configured, {**good, name: value})
            except InvalidInput as exc:
                log.warning("stored setting skipped: %s", exc)
            else:
                good[name] = value
        self._use(good, effective)
        return effective

    async def change(self, changes: Mapping[str, Any]) -> None:
        """Validate, store, then apply; a name set to None goes back to its configured
        value. Nothing is stored or applied if any change is wrong."""
        wanted = {**self.changed, **changes}
        wanted = {name: value for name, value in wanted.items() if value is not None}
        if "log_level" in wanted:
            wanted["log_level"] = _log_level(wanted["log_level"])
        effective = merged(self.configured, wanted)  # raises before anything is stored
        stored = {name: wanted[name] for name in changes if name in wanted}
        await self.store.save(stored, self.clock.now())
        await self.store.forget([name for name, value in changes.items() if value is None])
        self._version = await self.store.version()
        self._use(wanted, effective)
        log.info("settings changed at run time: %s", ", ".join(sorted(changes)))

    async def refresh(self) -> bool:
        """Apply what another process changed since this one last looked; whether
        anything had."""
        version = await self.store.version()
        if version == self._version:
            return False
        await self.load()
        return True

    def current(self) -> dict[str, Any]:
        """Each runtime setting's value in force, by dotted name."""
        values: dict[str, Any] = {}
        for name in RUNTIME:
            if name == "log_level":
                values[name] = self.log_level or logging.getLevelName(logging.getLogger().level)
                continue
            section, _, field = name.partition(".")
            value = getattr(getattr(self.effective, section), field)
            values[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return values

    def _use(self, changes: dict[str, Any], effective: Settings) -> None:
        """``changes`` are in force: ``effective`` is the configured settings with them."""
        self.changed = changes
        self.effective = effective
        self.log_level = changes.get("log_level")
        if self.apply is not None:
            self.apply(self.effective, self.log_level)


def boot_view(settings: Settings) -> dict[str, Any]:
    """Every configured setting as JSON, secrets as ``**********`` (pydantic's
    ``SecretStr``, and the password of a URL held as a plain string, ``db_url``), for
    the operator to read: these change only with a restart."""
    view: dict[str, Any] = _masked(settings.model_dump(mode="json"))
    return view


#: ``scheme://user:password@``: the password of a URL's userinfo (RFC 3986 §3.2.1)
_URL_PASSWORD = re.compile(r"(?P<head>^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]*(?=@)")
#: ``?password=…``: libpq's URIs (and asyncpg's) take the password as a parameter too
_QUERY_PASSWORD = re.compile(
    r"(?P<head>^[A-Za-z][A-Za-z0-9+.-]*://[^?#]*\?(?:[^#]*&)?password=)[^&#]*"
)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\g<head>**********", value)
        return _QUERY_PASSWORD.sub(r"\g<head>**********", value)
    return value
