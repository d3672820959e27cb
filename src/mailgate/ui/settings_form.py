"""The settings page's forms: which runtime settings each group holds, the value of each
in force next to the configured one, and a submitted form turned into changes.

A form submits every field of its group; only what differs becomes a change, so saving
one field never pins the others: a value that differs from the one in force is set, a
value equal to the configured one forgets a stored change (the same as "reset to
default"), anything else is left alone. Numbers are parsed here (a string stored as a
setting would outlive the restart as a string); their limits are the settings models'
own, checked by :meth:`~mailgate.services.runtime.RuntimeSettings.change`, whose error
names the field it is shown next to.

The boot-only settings come from :func:`~mailgate.services.runtime.boot_view`, which
redacts ``SecretStr`` values; a URL's password held in a plain string (``db_url``) is
masked here too, so the page never carries a secret whatever its type.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel

from mailgate.services.runtime import LOG_LEVELS, RUNTIME, RuntimeSettings, boot_view
from mailgate.settings import ChaosTrigger, Settings

__all__ = [
    "CHAOS",
    "GROUPS",
    "Field",
    "Group",
    "GroupView",
    "Submitted",
    "boot_rows",
    "group_view",
    "submitted",
]

Kind = Literal["int", "float", "level"]
MASK: Final = "**********"
CHAOS: Final = "smtp.chaos"
#: the chaos stages in the order of an SMTP session
STAGES: Final = (("auth", "AUTH"), ("mail", "MAIL FROM"), ("rcpt", "RCPT TO"), ("data", "DATA"))
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*(?=@)")


@dataclass(frozen=True, slots=True)
class Field:
    """One input: ``name`` is a runtime setting's dotted name, or below ``smtp.chaos``
    one stage's ``code`` or ``probability`` (``smtp.chaos.rcpt.code``)."""

    name: str
    label: str
    kind: Kind

    @property
    def setting(self) -> str:
        """The runtime setting (:data:`~mailgate.services.runtime.RUNTIME`) it is part of."""
        return CHAOS if self.name.startswith(CHAOS + ".") else self.name


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    title: str
    fields: tuple[Field, ...]

    @property
    def settings(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.setting for f in self.fields))


def _chaos_fields() -> tuple[Field, ...]:
    parts: tuple[tuple[str, str, Kind], ...] = (
        ("code", "reply code", "int"),
        ("probability", "percent refused", "float"),
    )
    return tuple(
        Field(f"{CHAOS}.{stage}.{part}", f"{label}: {text}", kind)
        for stage, label in STAGES
        for part, text, kind in parts
    )


GROUPS: Final = (
    Group("firestore", "Firestore polling", (
        Field("firestore.poll_interval", "Poll interval, seconds", "float"),
    )),
    Group("logging", "Logging", (Field("log_level", "Log level", "level"),)),
    Group("retry", "Retry schedule", (
        Field("retry.initial_delay", "First retry after, seconds", "float"),
        Field("retry.multiplier", "Backoff multiplier", "float"),
        Field("retry.max_delay", "Longest wait, seconds", "float"),
        Field("retry.max_age", "Give up after, seconds", "float"),
        Field("retry.jitter", "Jitter, fraction", "float"),
        Field("retry.max_attempts", "Attempts at most", "int"),
    )),
    Group("rate", "Rate limits (each account's per minute, hour and day: on its page)", (
        Field("delivery.pace_burst", "Sends an account's rate lets go back to back", "int"),
    )),
    Group("retention", "Retention and inbox limits", (
        Field("retention.days", "Finished mail kept, days", "float"),
        Field("retention.interval", "Purge every, seconds", "float"),
        Field("inbox.max_messages", "Captured messages kept per inbox (0: no limit)", "int"),
        Field("inbox.max_age_days", "Captured mail kept, days (0: no limit)", "float"),
    )),
    Group("chaos", "SMTP chaos (capture)", _chaos_fields()),
)  # fmt: skip
assert {s for g in GROUPS for s in g.settings} == set(RUNTIME), "a runtime setting has no form"


@dataclass(frozen=True, slots=True)
class Row:
    field: Field
    value: str  #: shown in the input: the value in force, or what was just submitted
    configured: str  #: the configured default, as text
    changed: bool  #: differs from the configured default
    help: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class GroupView:
    group: Group
    rows: tuple[Row, ...]
    resets: tuple[str, ...]  #: the group's settings changed from their default
    result: str | None = None  #: what the last submit did
    error: str | None = None  #: the last submit's error not about one field

    @property
    def failed(self) -> bool:
        return self.error is not None or any(row.error for row in self.rows)


@dataclass(slots=True)
class Submitted:
    """A submitted form: the changes it asks for, or why it cannot be applied."""

    changes: dict[str, Any] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  #: as typed, by field name
    errors: dict[str, str] = field(default_factory=dict)  #: by field name


def group_view(
    runtime: RuntimeSettings,
    group: Group,
    *,
    typed: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    result: str | None = None,
    error: str | None = None,
) -> GroupView:
    """The group's inputs with the values in force (``typed`` instead, after an error)."""
    current, configured = runtime.current(), _configured(runtime.configured)
    rows = tuple(
        Row(
            field=f,
            value=(typed or {}).get(f.name, show(_lookup(current, f.name))),
            configured=show(_lookup(configured, f.name)),
            changed=_differs(runtime, f, current, configured),
            help=_description(runtime.configured, f.name),
            error=(errors or {}).get(f.name),
        )
        for f in group.fields
    )
    resets = tuple(s for s in group.settings if s in runtime.changed)
    return GroupView(group, rows, resets, result, error)


def submitted(runtime: RuntimeSettings, group: Group, form: Mapping[str, str]) -> Submitted:
    """The changes ``form`` asks of ``group``'s settings (see the module's docstring)."""
    out = Submitted()
    parsed: dict[str, Any] = {}
    for f in group.fields:
        raw = out.values[f.name] = form.get(f.name, "").strip()
        try:
            parsed[f.name] = parse(f.kind, raw)
        except ValueError as exc:
            out.errors[f.name] = str(exc)
    if out.errors:
        return out
    current, configured = runtime.current(), _configured(runtime.configured)
    for setting in group.settings:
        value = _assemble(setting, parsed)
        if setting != "log_level" and value == configured[setting]:
            if setting in runtime.changed:
                out.changes[setting] = None
        elif value != current[setting]:
            out.changes[setting] = value
    return out


def parse(kind: Kind, raw: str) -> Any:
    if not raw:
        raise ValueError("a value is needed")
    if kind == "level":
        if raw.upper() not in LOG_LEVELS:
            raise ValueError(f"one of {', '.join(LOG_LEVELS)}")
        return raw.upper()
    try:
        number = int(raw) if kind == "int" else float(raw)
    except ValueError:
        raise ValueError("a whole number" if kind == "int" else "a number") from None
    if not math.isfinite(number):
        raise ValueError("a finite number")
    return number


def show(value: Any) -> str:
    """A value as an input holds it: ``3600`` for 3600.0, ``0.2`` for 0.2."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def field_of(message: str, group: Group) -> str | None:
    """The field an error of :meth:`RuntimeSettings.change` names (``where: why``)."""
    where = message.partition(":")[0].strip()
    return next((f.name for f in group.fields if f.name == where), None)


def boot_rows(settings: Settings) -> list[tuple[str, str]]:
    """Every boot-only setting by dotted name, as text, secrets redacted."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if prefix in RUNTIME:
            return  # changed above, not boot-only
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        text = value if isinstance(value, str) else json.dumps(value)
        rows.append((prefix, _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)))

    walk("", boot_view(settings))
    return rows


def _assemble(setting: str, parsed: Mapping[str, Any]) -> Any:
    if setting != CHAOS:
        return parsed[setting]
    return {
        stage: {part: parsed[f"{CHAOS}.{stage}.{part}"] for part in ("code", "probability")}
        for stage, _ in STAGES
    }


def _configured(settings: Settings) -> dict[str, Any]:
    """The configured value of each runtime setting (``log_level``: None, the
    process's ``--log-level``), shaped as :meth:`RuntimeSettings.current`."""
    values: dict[str, Any] = {"log_level": None}
    for name in RUNTIME:
        if name != "log_level":
            section, _, attr = name.partition(".")
            value = getattr(getattr(settings, section), attr)
            values[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return values


def _lookup(values: Mapping[str, Any], name: str) -> Any:
    if not name.startswith(CHAOS + "."):
        return values[name]
    stage, part = name.removeprefix(CHAOS + ".").split(".")
    return values[CHAOS][stage][part]


def _differs(
    runtime: RuntimeSettings, f: Field, current: Mapping[str, Any], configured: Mapping[str, Any]
) -> bool:
    if f.setting == "log_level":
        return "log_level" in runtime.changed
    return bool(_lookup(current, f.name) != _lookup(configured, f.name))


def _description(settings: Settings, name: str) -> str:
    if name == "log_level":
        return "The process's log level; its default is the command line's --log-level."
    if name.startswith(CHAOS + "."):
        return ChaosTrigger.model_fields[name.rpartition(".")[2]].description or ""
    section, _, attr = name.partition(".")
    model: BaseModel = getattr(settings, section)
    return type(model).model_fields[attr].description or ""
