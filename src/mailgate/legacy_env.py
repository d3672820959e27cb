"""The environment of what mailgate replaces, as mailgate settings (issue 8).

A Firebase app's mail was sent by a hand-written agent or by the Firebase "Trigger
Email" extension (``firestore-send-email``); their variables (:data:`LEGACY_NAMES`)
keep working unchanged. This module is the pure mapping: variables in, nested
settings and the variables each setting came from out, or one
:class:`~pydantic.ValidationError` naming every variable that cannot be used.
:class:`mailgate.settings.LegacyEnvSource` reads the variables (environment, ``.env``)
and places the result below the ``MAILGATE_*`` names. docs/deploy.md has the table.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator, Mapping
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from mailgate.errors import ConfigError

__all__ = ["LEGACY_NAMES", "legacy_label", "map_legacy"]

#: Variable names read by :class:`mailgate.settings.LegacyEnvSource`:
#: the hand-written agent's, then the Firebase Trigger Email extension's parameters.
#: LOG_LEVEL and LOG_FILE are the CLI's (``--log-level``, ``--log-file``), not settings.
LEGACY_NAMES = (
    "FIREBASE_SERVICE_ACCOUNT_PATH",
    "FIREBASE_DATABASE_URL",
    "SMTP_SERVER",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_USE_TLS",
    "SMTP_FROM_EMAIL",
    "SMTP_FROM_NAME",
    "POLL_INTERVAL",
    "MAX_RETRY_COUNT",
    "LOG_LEVEL",
    "LOG_FILE",
    "ADMIN_PORT",
    "ADMIN_USER",
    "ADMIN_PASS",
    "SMTP_CONNECTION_URI",
    "DEFAULT_FROM",
    "DEFAULT_REPLY_TO",
    "MAIL_COLLECTION",
    "USERS_COLLECTION",
    "TEMPLATES_COLLECTION",
    "TTL_EXPIRE_TYPE",
    "TTL_EXPIRE_VALUE",
)

#: The variables that are one setting each (or two: DEFAULT_FROM).
_LEGACY_FIELDS: dict[str, tuple[str, ...]] = {
    "FIREBASE_SERVICE_ACCOUNT_PATH": ("firestore.credentials",),
    "POLL_INTERVAL": ("firestore.poll_interval",),
    "MAX_RETRY_COUNT": ("firestore.max_retry_count",),
    "ADMIN_PORT": ("http.port",),
    "ADMIN_USER": ("admin_user",),
    "ADMIN_PASS": ("admin_pass",),
    "DEFAULT_FROM": ("firestore.default_from", "default_from"),
    "DEFAULT_REPLY_TO": ("firestore.default_reply_to",),
    "MAIL_COLLECTION": ("firestore.collection",),
    "USERS_COLLECTION": ("firestore.users_collection",),
    "TEMPLATES_COLLECTION": ("firestore.templates_collection",),
    "TTL_EXPIRE_TYPE": ("firestore.ttl_expire_type",),
    "TTL_EXPIRE_VALUE": ("firestore.ttl_expire_value",),
}
#: The old agent's variables that describe the default account instead of
#: SMTP_CONNECTION_URI (SMTP_PASSWORD and the sender go with either).
_AGENT_SMTP = ("SMTP_SERVER", "SMTP_PORT", "SMTP_USERNAME", "SMTP_USE_TLS")
#: All of the old agent's account variables but the sender, in the order shown.
_AGENT_ACCOUNT = ("SMTP_SERVER", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_USE_TLS")
_SENDER = ("SMTP_FROM_EMAIL", "SMTP_FROM_NAME")
#: https://PROJECT.firebaseio.com, https://PROJECT-default-rtdb.REGION.firebasedatabase.app
_DATABASE_HOST = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9-]*?)(?:-default-rtdb)?"
    r"\.(?:firebaseio\.com|[a-z0-9-]+\.firebasedatabase\.app)"
)


def legacy_label(names: tuple[str, ...], found: Mapping[str, tuple[str, str]]) -> str:
    """``legacy POLL_INTERVAL (.env)``; variables from both places grouped by place."""
    groups = [
        f"{', '.join(n for n in names if found[n][1] == where)} ({where})"
        for where in ("env", ".env")
        if any(found[n][1] == where for n in names)
    ]
    return "legacy " + "; ".join(groups)


class _Bad(Exception):
    """A legacy variable whose value cannot be used; the reason never repeats the value."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name, self.reason = name, reason


def map_legacy(
    variables: Mapping[str, str], settings_cls: type[BaseModel]
) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """Legacy variables → (settings as nested dicts, ``{dotted setting: variables used}``).

    Pure: takes the variables, reads nothing. Each value is checked as the setting it
    becomes is (``settings_cls``'s field), and every unusable one is reported at once,
    as a :class:`ValidationError` whose location is the variable's name.
    """
    values: dict[str, Any] = {}
    used: dict[str, tuple[str, ...]] = {}
    errors: list[InitErrorDetails] = []
    for path, value, names in _legacy_items(variables, settings_cls, errors):
        section, _, name = path.rpartition(".")
        (values.setdefault(section, {}) if section else values)[name] = value
        used[path] = names
    if errors:
        raise ValidationError.from_exception_data("Settings", errors, hide_input=True)
    return values, used


def _legacy_items(
    variables: Mapping[str, str], settings_cls: type[BaseModel], errors: list[InitErrorDetails]
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """``(dotted setting, value, variables)`` for each setting the variables give."""
    for name, paths in _LEGACY_FIELDS.items():
        if name in variables:
            try:
                for path in paths:
                    _check(settings_cls, path, name, variables[name])
            except _Bad as bad:
                errors.append(_legacy_error(bad, paths[0]))
            else:
                yield from ((path, variables[name], (name,)) for path in paths)
    for path, derive in _DERIVED:
        try:
            derived = derive(variables)
        except _Bad as bad:
            errors.append(_legacy_error(bad, path))
        else:
            if derived is not None:
                yield (path, *derived)


def _legacy_error(bad: _Bad, path: str) -> InitErrorDetails:
    message = "{reason} (legacy name of {setting})"
    return {
        "type": PydanticCustomError(
            "legacy_setting", message, {"reason": bad.reason, "setting": path}
        ),
        "loc": (bad.name,),
        "input": None,  # never the value: it may be a password
    }


def _check(settings_cls: type[BaseModel], path: str, name: str, value: str) -> None:
    """Validate ``value`` as the setting at ``path`` would, naming ``name`` if it fails."""
    try:
        _adapter(settings_cls, path).validate_python(value)
    except ValidationError as exc:
        raise _Bad(name, exc.errors(include_input=False)[0]["msg"]) from None


@functools.cache
def _adapter(settings_cls: type[BaseModel], path: str) -> TypeAdapter[Any]:
    section, _, name = path.rpartition(".")
    model = settings_cls.model_fields[section].annotation if section else settings_cls
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return TypeAdapter(model.model_fields[name].rebuild_annotation())


def _project_id(variables: Mapping[str, str]) -> tuple[str, tuple[str, ...]] | None:
    """The project of the agent's Realtime Database URL (default instances' names)."""
    url = variables.get("FIREBASE_DATABASE_URL")
    if url is None:
        return None
    match = _DATABASE_HOST.fullmatch(urlsplit(url).hostname or "")
    if match is None:
        raise _Bad(
            "FIREBASE_DATABASE_URL",
            "expected https://PROJECT.firebaseio.com or"
            " https://PROJECT-default-rtdb.REGION.firebasedatabase.app",
        )
    return match["name"], ("FIREBASE_DATABASE_URL",)


def _relay_url(variables: Mapping[str, str]) -> tuple[str, tuple[str, ...]] | None:
    """The default account from the agent's SMTP_* parts or the extension's URI.

    Checked with :func:`~mailgate.deliver.relay.parse_relay_url` now, so a mistake names
    the variable instead of surfacing as a relay URL error at start.
    """
    from mailgate.deliver.relay import parse_relay_url  # mailgate.deliver imports settings

    agent = _present(variables, _AGENT_SMTP)
    names: tuple[str, ...]
    if "SMTP_CONNECTION_URI" in variables:
        if agent:
            raise _Bad(agent[0], "set either SMTP_CONNECTION_URI or SMTP_SERVER and its parts")
        url, names = _from_connection_uri(variables), ("SMTP_CONNECTION_URI", "SMTP_PASSWORD")
    elif "SMTP_SERVER" in variables:
        url, names = _from_agent_parts(variables), _AGENT_ACCOUNT
    else:
        for name in (*agent, "SMTP_PASSWORD"):
            if name in variables:
                raise _Bad(name, "needs SMTP_SERVER (or SMTP_CONNECTION_URI)")
        return None
    if "SMTP_FROM_EMAIL" in variables or "SMTP_FROM_NAME" in variables:
        url, names = _with_sender(url, variables), (*names, *_SENDER)
    try:
        parse_relay_url(url)
    except ConfigError as exc:
        raise _Bad(names[0], str(exc)) from None
    return url, _present(variables, names)


def _from_agent_parts(variables: Mapping[str, str]) -> str:
    """``SMTP_USE_TLS``: port 465 is implicit TLS (smtps) whatever it says; otherwise true
    requires STARTTLS (smtp+starttls, 587 when no port is given) and false or unset is
    smtp:// (STARTTLS when offered; the password only ever goes over TLS)."""
    server, port = variables["SMTP_SERVER"], variables.get("SMTP_PORT")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise _Bad("SMTP_PORT", "must be a port number, 1 to 65535")
    use_tls = _flag(variables, "SMTP_USE_TLS")
    scheme = "smtps" if port == "465" else "smtp+starttls" if use_tls else "smtp"
    host = _url_host(server)
    user, password = variables.get("SMTP_USERNAME"), variables.get("SMTP_PASSWORD")
    if password and not user:
        raise _Bad("SMTP_PASSWORD", "needs SMTP_USERNAME")
    userinfo = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user else ""
    return f"{scheme}://{userinfo}{host}" + (f":{port}" if port else "")


def _url_host(server: str) -> str:
    try:
        if ipaddress.ip_address(server).version == 6:
            return f"[{server}]"  # RFC 3986 §3.2.2
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", server):
            raise _Bad("SMTP_SERVER", "must be a host name or address, without a port") from None
    return server


def _flag(variables: Mapping[str, str], name: str) -> bool:
    try:
        return bool(TypeAdapter(bool).validate_python(variables.get(name, "false")))
    except ValidationError:
        raise _Bad(name, "must be true or false") from None


def _from_connection_uri(variables: Mapping[str, str]) -> str:
    """The extension's URI, as nodemailer reads it: ``smtp://`` on port 465 is implicit
    TLS; ``SMTP_PASSWORD`` replaces the URI's password, as the extension does."""
    uri, password = variables["SMTP_CONNECTION_URI"], variables.get("SMTP_PASSWORD")
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        raise _Bad("SMTP_CONNECTION_URI", "has an invalid port") from None
    if parts.scheme.lower() == "smtp" and port == 465:
        parts = parts._replace(scheme="smtps")
    if password:
        if not parts.username:
            raise _Bad("SMTP_PASSWORD", "SMTP_CONNECTION_URI names no user to log in as")
        where = parts.netloc.rpartition("@")[2]
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        parts = parts._replace(netloc=f"{user}:{quote(password, safe='')}@{where}")
    return parts.geturl()


def _with_sender(url: str, variables: Mapping[str, str]) -> str:
    query = urlsplit(url).query
    if "from" in parse_qs(query):
        raise _Bad("SMTP_FROM_EMAIL", "SMTP_CONNECTION_URI has a from= of its own")
    separator = "&" if query else "?"
    return f"{url}{separator}{urlencode({'from': _sender(variables)})}"


def _sender(variables: Mapping[str, str]) -> str:
    """``SMTP_FROM_NAME <SMTP_FROM_EMAIL>``, the name quoted where RFC 5322 needs it."""
    if "SMTP_FROM_EMAIL" not in variables:
        raise _Bad("SMTP_FROM_NAME", "needs SMTP_FROM_EMAIL")
    try:
        address = Address(
            display_name=variables.get("SMTP_FROM_NAME", ""),
            addr_spec=variables["SMTP_FROM_EMAIL"],
        )
    except (ValueError, HeaderParseError):
        raise _Bad("SMTP_FROM_EMAIL", "must be an email address") from None
    return str(address)


def _default_sender(variables: Mapping[str, str]) -> tuple[str, tuple[str, ...]] | None:
    """SMTP_FROM_* with no relay to carry them (capture only) and no DEFAULT_FROM."""
    relay = ("SMTP_SERVER", "SMTP_CONNECTION_URI", "DEFAULT_FROM")
    if any(name in variables for name in relay) or not _present(variables, _SENDER):
        return None
    return _sender(variables), _present(variables, _SENDER)


#: Settings made from several variables, or from one that needs reading.
_DERIVED = (
    ("firestore.project_id", _project_id),
    ("relay_url", _relay_url),
    ("default_from", _default_sender),
)


def _present(variables: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if name in variables)
