"""All configuration, in one pydantic-settings object.

Precedence (highest first): command-line flags, ``MAILGATE_*`` environment
variables (nested sections with ``__``: ``MAILGATE_SMTP__PORT``), ``.env``, the
variables of the agent mailgate replaces and of the Firebase Trigger Email
extension (:class:`LegacyEnvSource`: environment, then ``.env``), the TOML file
given with ``--config``, the defaults below. Only the composition root
(:mod:`mailgate.app`) and the CLI build a :class:`Settings`; every part receives
just its own section. :func:`setting_origins` tells where each value came from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from mailgate.errors import ConfigError, InvalidInput
from mailgate.legacy_env import LEGACY_NAMES, legacy_label, map_legacy
from mailgate.policy import RetryPolicy

__all__ = [
    "TENANT_RULE",
    "TTL_DAYS",
    "AttachmentSettings",
    "ChaosSettings",
    "ChaosTrigger",
    "DeliverySettings",
    "FirestoreSettings",
    "HttpSettings",
    "LegacyEnvSource",
    "LimitSettings",
    "PostmarkSettings",
    "ReportSettings",
    "RetentionSettings",
    "RetrySettings",
    "Settings",
    "SmtpSettings",
    "WebhookSettings",
    "data_dir",
    "default_db_url",
    "environ_or_dotenv",
    "load_settings",
    "not_a_bool",
    "setting_origins",
    "valid_tenant",
]


class _Section(BaseModel):
    """A section of :class:`Settings`: a name it does not know is a misspelt setting, an
    error as at the top level (``[delivery] concurency = 4`` must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the web server (API, UI) binds to.")
    port: int = Field(8787, ge=0, le=65535, description="Web server port; 0 picks a free one.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the web server answers besides loopback ones"
        " (localhost, 127.0.0.1, ::1). Without an API token only these are served:"
        " a guard against DNS rebinding.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the separate metrics listener (see metrics_port)."
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve /metrics, /healthz and /readyz, without a token, on a listener of"
        " their own at this port (`--metrics HOST:PORT`); unset: /metrics only on the web"
        " server, behind the API token.",
    )


class HandlerPoolSettings(_Section):
    num_workers: int = Field(
        4, ge=1, description="Captured messages handed to the handlers at once; more wait."
    )
    timeout: float = Field(
        10.0, gt=0, description="Seconds a handler may take before the client hears 451."
    )


class AttachmentStorageSettings(_Section):
    """How the capture handlers get a captured message's attachments."""

    mode: Literal["memory", "tempfile"] = Field(
        "memory",
        description="memory: each attachment's content (base64) is in the capture event;"
        " tempfile: each is written to a file (0600, in a 0700 directory per message) and"
        " the event has its `path` instead; a message over 1 MiB is written to disk as it"
        " arrives and never held whole in memory.",
    )
    temp_dir: Path | None = Field(
        None,
        description="tempfile: where the files go (in a `mailgate-<store>` directory of"
        " it); unset: `attachments` in the data directory.",
    )
    cleanup_after: float = Field(
        3600.0,
        gt=0,
        description="tempfile: seconds a message's files are kept; they go sooner when"
        " the message is deleted or pruned from the inbox.",
    )


_LOOPBACK: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)


def not_a_bool(value: Any) -> Any:
    """A number's check: JSON's true and false are no numbers (pydantic's lax mode takes
    them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


class ChaosTrigger(_Section):
    """One stage's chaos trigger: its reply code, and how often it fires."""

    code: int = Field(
        451,
        ge=400,
        le=599,
        description="Reply code when it fires: a 4yz or 5yz reply (RFC 5321 §4.2.1).",
    )
    probability: float = Field(
        0.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="Percent of the stage's commands refused (fractions allowed); 0: off.",
    )

    @field_validator("code", "probability", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        return not_a_bool(value)


class ChaosSettings(_Section):
    """Capture's chaos triggers at start (issue 10); ``PUT /api/v1/chaos`` changes them."""

    auth: ChaosTrigger = Field(default_factory=ChaosTrigger, description="AUTH.")
    mail: ChaosTrigger = Field(default_factory=ChaosTrigger, description="MAIL FROM.")
    rcpt: ChaosTrigger = Field(default_factory=ChaosTrigger, description="Each RCPT TO.")
    data: ChaosTrigger = Field(
        default_factory=ChaosTrigger,
        description="The end of DATA or BDAT LAST; the message refused is not kept.",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_stages(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(
                    f"unknown chaos stage {', '.join(unknown)}: the stages are auth, mail,"
                    " rcpt and data"
                )
        return data


class SmtpSettings(_Section):
    enabled: bool = Field(True, description="Run the SMTP server (capture in dev).")
    host: str = Field("127.0.0.1", description="Address the SMTP server binds to.")
    port: int = Field(1025, ge=0, le=65535, description="SMTP port; 0 picks a free one.")
    hostname: str = Field("mailgate.local", description="Name in the SMTP greeting and EHLO.")
    read_timeout: float = Field(
        60.0,
        gt=0,
        validation_alias=AliasChoices("read_timeout", "timeout"),
        description="Seconds a client may take to send its next command or line of data;"
        " then it hears 421 4.4.2 and is dropped (`timeout` is the old name).",
    )
    write_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client may leave a reply unread before it is dropped.",
    )
    shutdown_grace: float = Field(
        10.0, description="Seconds open sessions get to finish on shutdown before a 421."
    )
    max_connections: int = Field(
        500, ge=1, description="Open SMTP sessions at most; one more hears 421 at the greeting."
    )
    mode: Literal["capture", "submission"] | None = Field(
        None,
        description="`capture`: keep every message in the inbox (what `mailgate dev` does);"
        " `submission`: authenticated clients (SMTP users) hand mail to the queue for"
        " delivery. Unset: capture under `dev`, no SMTP server under `serve`.",
    )
    max_message_size: int = Field(
        10 * 1024 * 1024,
        ge=0,
        description="Largest message in bytes, announced in EHLO SIZE (552 5.3.4 past it);"
        " 0: no limit of its own (the store's, 999,000,000, as for anything larger).",
    )
    max_recipients: int = Field(100, ge=1, description="RCPT TO per message; past it 452 4.5.3.")
    auth_max_failures: int = Field(
        5,
        ge=1,
        description="Submission: failed AUTH attempts a client address may make within"
        " auth_failure_window; then it hears 421 until the window passes. Counted in the"
        " store: one limit for every process on it.",
    )
    auth_failure_window: float = Field(
        300.0, gt=0, description="Seconds over which failed AUTH attempts are counted."
    )
    cleartext_auth_from: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(_LOOPBACK),
        description="Submission: networks whose clients may AUTH without TLS (loopback);"
        " others must use STARTTLS or the implicit-TLS port first.",
    )
    auth: Literal["accept", "verify"] = Field(
        "accept",
        description="Capture: `accept` takes any credentials (and records them); `verify`"
        " takes only those in `users` (others get 535), to test an application's errors.",
    )
    users: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="username → password for `auth = verify`"
        ' (MAILGATE_SMTP__USERS=\'{"app": "secret"}\').',
    )
    handlers: list[str] = Field(
        default_factory=list,
        description="Capture: each message's capture event is handed to these, in order:"
        " an http(s) URL (POSTed as JSON) or module:function; the answer CLOSE ends the"
        " session after the 250 (221), CONTINUE keeps it; a failure answers 451.",
    )
    pool: HandlerPoolSettings = Field(default_factory=HandlerPoolSettings)
    attachment_storage: AttachmentStorageSettings = Field(default_factory=AttachmentStorageSettings)
    include_raw: bool = Field(
        False, description="Handlers also get the message as it arrived (`message.raw`)."
    )
    chaos: ChaosSettings = Field(
        default_factory=ChaosSettings,
        description="Capture: refuse AUTH, MAIL, RCPT or messages on purpose, each stage"
        ' {"code": 451, "probability": 50} (percent), to test an application\'s retries'
        ' (MAILGATE_SMTP__CHAOS=\'{"rcpt": {"probability": 50}}\'); changed at run time'
        " with PUT /api/v1/chaos.",
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) for STARTTLS and the implicit-TLS listener;"
        " unset: `mailgate dev` makes a self-signed one in its data directory, `serve`"
        " offers no TLS.",
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also listen with implicit TLS (RFC 8314, as on port 465) on this port"
        " of `host`; 0 picks a free one; unset: no such listener.",
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("smtp.tls_cert and smtp.tls_key go together: set both or neither")
        if self.auth == "verify" and not self.users:
            raise ValueError("smtp.auth = verify needs smtp.users (username → password)")
        return self


class LimitSettings(_Section):
    """What one submission may hold; each at least 1 (0 or less refused every message)."""

    max_message_size: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest message accepted, in bytes (SMTP SIZE, REST)."
    )
    max_recipients: int = Field(
        500, ge=1, description="Most recipients (to+cc+bcc) of one message."
    )
    max_batch: int = Field(1000, ge=1, description="Most messages in one POST /messages.")
    max_subject_length: int = Field(
        998, ge=1, description="Longest subject, in characters (RFC 5322 §2.1.1 line limit)."
    )
    max_header_value: int = Field(
        4096, ge=1, description="Longest value of one custom header, in characters."
    )
    max_headers: int = Field(100, ge=1, description="Most custom headers on one message.")
    max_metadata_depth: int = Field(8, ge=1, description="Deepest nesting of a message's metadata.")
    max_metadata_bytes: int = Field(
        16384, ge=1, description="Largest metadata of one message, in bytes of JSON."
    )
    max_request_body: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Largest HTTP request body, in bytes; larger ones get 413 before parsing."
        " The effective limit is the smaller of this and max_batch × max_message_size;"
        " the default takes two messages of the largest size as JSON: split bigger batches.",
    )


class DeliverySettings(_Section):
    # Each bound keeps the dispatcher working: a pool of 0 connections spun a core and
    # sent nothing, no slots never leased a retry, a NaN lease failed every lease.
    model_config = ConfigDict(allow_inf_nan=False)

    enabled: bool = Field(True, description="Run the dispatcher in this process.")
    concurrency: int = Field(16, ge=1, description="Messages in flight at once in this process.")
    pool_size: int = Field(8, ge=1, le=100, description="Open SMTP connections kept per upstream.")
    lease_seconds: float = Field(
        300.0,
        # a lease that ends before the first renewal (at half of it) runs lets every
        # other dispatcher lease the message again while it is sent: 0 or less sent
        # each message up to three times from two processes, with nobody dead
        ge=1,
        le=86400,
        description="A leased message returns to the queue if not settled in time"
        " (renewed at half of it while a send runs).",
    )
    poll_interval: float = Field(
        2.0, gt=0, le=86400, description="Longest sleep between queue scans."
    )
    smtp_timeout: float = Field(60.0, gt=0, description="Seconds to wait for each upstream reply.")
    pace_burst: int = Field(
        2,
        ge=1,
        le=1000,
        description="Sends an account's rate limit lets go back to back (token bucket"
        " capacity): 2 absorbs scheduling jitter without bursting at window boundaries.",
    )
    account_recheck: float = Field(
        30.0,
        gt=0,
        description="Seconds between checks of a message waiting for its account"
        " (unknown or disabled) to become usable.",
    )
    pool_idle_timeout: float = Field(
        300.0,
        ge=0,
        description="A pooled SMTP connection unused this many seconds is closed (QUIT).",
    )
    pool_max_age: float = Field(
        3600.0, ge=0, description="A pooled SMTP connection this many seconds old is closed (QUIT)."
    )
    pool_noop_after: float = Field(
        5.0, ge=0, description="A pooled SMTP connection idle this long is checked with NOOP first."
    )


class AttachmentSettings(_Section):
    """Attachments given by ``url`` or ``path``, resolved when the message is sent.

    A URL is fetched by the gateway, so by default it may only reach public addresses,
    checked after DNS resolution on every redirect (no SSRF into the local network or a
    cloud metadata service).
    """

    fetch_timeout: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="Seconds for fetching one URL attachment."
    )
    max_attachment_size: int = Field(
        25 * 1024 * 1024,
        ge=1,
        description="Largest attachment, in bytes (inline, fetched or read).",
    )
    max_message_size: int = Field(
        100 * 1024 * 1024,
        ge=1,
        description="Most bytes of attachments in one message once url/path ones are resolved.",
    )
    allow_private_networks: bool = Field(
        False,
        description="Let URL attachments reach loopback, private, link-local and metadata"
        " addresses (development only).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (or IP addresses) URL attachments may reach even when they"
        " resolve to a private address.",
    )
    volumes: dict[str, Path] = Field(
        default_factory=dict,
        description="Directories ``path`` attachments may read, by name: an attachment path"
        ' "name:sub/file.pdf" reads that file inside the directory named "name".',
    )


class WebhookSettings(_Section):
    """Webhook delivery (endpoints are added with ``POST /api/v1/webhooks`` or
    ``mailgate webhooks add``).

    A failed POST is retried after each delay in ``retry_delays`` in turn (the last one
    repeating), each moved by up to ± ``jitter``, until an attempt fails more than
    ``dead_after`` seconds after the event: then the event is dead-lettered. The
    defaults retry for a little over a day (5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h,
    then every 4 h). Endpoint URLs follow the URL attachments' rule: public addresses
    only, checked after DNS resolution, unless private networks or the host are allowed.
    """

    model_config = ConfigDict(allow_inf_nan=False)  # timedelta(inf) raises

    enabled: bool = Field(True, description="Deliver webhooks in this process.")
    timeout: float = Field(
        10.0, gt=0, description="Seconds a receiver has to answer one POST (connect included)."
    )
    concurrency: int = Field(64, ge=1, description="POSTs in flight at once per endpoint.")
    retry_delays: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0],
        min_length=1,
        description="Seconds before each retry of a failed POST; the last one repeats"
        " (each above 0: a delay of 0 or less POSTed to a failing receiver at every poll).",
    )
    jitter: float = Field(
        0.2, ge=0, lt=1, description="Each retry delay moves by up to ± this fraction."
    )
    dead_after: float = Field(
        86400.0,
        gt=0,
        description="An event still failing this many seconds after it happened is"
        " dead-lettered (retries stop; POST /api/v1/events/{id}/replay sends it again).",
    )
    poll_interval: float = Field(
        0.1, gt=0, description="Seconds between checks for events to send (a cheap read)."
    )
    allow_private_networks: bool | None = Field(
        None,
        description="Let webhook URLs reach loopback, private, link-local and metadata"
        " addresses; unset: yes for `mailgate dev`, no for `serve`.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (or IP addresses) webhooks may reach even when they"
        " resolve to a private address.",
    )


class FirestoreSettings(_Section):
    """The Firestore ``mail`` collection as a source (``mailgate serve --firestore``).

    Credentials: a service-account file (``credentials``, else
    ``GOOGLE_APPLICATION_CREDENTIALS``); with ``FIRESTORE_EMULATOR_HOST`` set, the
    emulator and no credentials, as the client libraries do.
    """

    model_config = ConfigDict(allow_inf_nan=False)  # timedelta(inf) raises

    enabled: bool = Field(False, description="Watch the collection (`serve --firestore`).")
    project_id: str | None = Field(
        None,
        description="Google Cloud project; unset: the credentials file's, else"
        " GOOGLE_CLOUD_PROJECT.",
    )
    database: str = Field("(default)", description="Firestore database id.")
    collection: str = Field("mail", description="The collection documents are written to.")
    users_collection: str = Field(
        "users", description="Where toUids/ccUids/bccUids are looked up (their `email`)."
    )
    templates_collection: str | None = Field(
        None, description="Where `template.name` is looked up; unset: templates are refused."
    )
    credentials: Path | None = Field(None, description="Service-account JSON file.")
    contract: Literal["auto", "simple", "extension"] = Field(
        "auto",
        description="Document shape: simple (to/subject/message.html, state SENT|ERROR),"
        " extension (Trigger Email: message/template, delivery.state), or auto per document.",
    )
    tenant: str = Field(
        "default",
        min_length=1,
        max_length=64,
        description="The tenant the documents' mail belongs to (up to 64 characters).",
    )
    poll_interval: float = Field(
        10.0, gt=0, le=86400, description="Seconds between polls (besides the listener)."
    )
    listen: bool = Field(True, description="Listen to the collection (on_snapshot) too.")
    sweep_interval: float = Field(
        300.0,
        ge=0,
        description="Seconds between sweeps of the whole collection (paged, a few fields"
        " read per document) for new documents with no `delivery` field that the listener"
        " missed, or all of them without a listener; 0: no sweep. Each sweep reads every"
        " document once: keep the collection small with a TTL policy.",
    )
    max_retry_count: int = Field(
        3, ge=1, description="Tries of a simple-contract document before it stays ERROR."
    )
    lease_seconds: float = Field(
        120.0,
        gt=0,
        le=86400,
        description="A leased document whose gateway stopped is taken over this long after"
        " its lease (or its next retry) ends.",
    )
    default_from: str | None = Field(None, description="From for documents naming none.")
    default_reply_to: str | None = Field(None, description="Reply-To for documents naming none.")
    ttl_expire_type: Literal["never", "hour", "day", "week", "month", "year"] = Field(
        "never", description="Set delivery.expireAt this long after the outcome (TTL policy)."
    )
    ttl_expire_value: int = Field(1, ge=1, description="How many ttl_expire_type units.")

    @field_validator("collection", "users_collection", "templates_collection")
    @classmethod
    def _collection_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A collection's path, checked at start: a bad one failed every poll for ever
        (``""``, ``a//b``, ``__x__``) or the start with a traceback (``a/b``)."""
        if value is None or (value == "" and info.field_name == "templates_collection"):
            return value  # unset: templates are refused
        segments = value.split("/")
        if len(segments) % 2 == 0 or not all(map(_collection_id, segments)):
            raise ValueError(
                "a collection path: an odd number of ids (mail, or tenants/acme/mail), each"
                " 1-1500 bytes, without '/', not '.', '..' or __reserved__"
            )
        return value

    @model_validator(mode="after")
    def _ttl_fits(self) -> Self:
        """expireAt must be a date: a TTL of a billion years was an OverflowError at start."""
        if TTL_DAYS.get(self.ttl_expire_type, 0) * self.ttl_expire_value > 36500:
            raise ValueError("firestore.ttl_expire_value: at most 100 years of ttl_expire_type")
        return self

    @field_validator("tenant")
    @classmethod
    def _printable_tenant(cls, value: str) -> str:
        """The store's tenant columns hold 64 characters (max_length): a longer tenant
        failed every document's insert on PostgreSQL."""
        if not valid_tenant(value):
            raise ValueError(TENANT_RULE)
        return value


#: what a tenant name may be: what the store's tenant columns hold, nothing unprintable
TENANT_RULE = "a tenant is 1 to 64 printable characters"


def valid_tenant(value: str) -> bool:
    """Whether ``value`` keeps :data:`TENANT_RULE` (a longer one failed PostgreSQL's
    inserts and was kept whole on SQLite)."""
    return 0 < len(value) <= 64 and value.isprintable()


#: days in each firestore.ttl_expire_type unit (the extension's TTL_EXPIRE_TYPE)
TTL_DAYS: dict[str, float] = {"hour": 1 / 24, "day": 1, "week": 7, "month": 30, "year": 365}


def _collection_id(segment: str) -> bool:
    """A Firestore collection or document id (Firestore's rules for ids)."""
    reserved = segment.startswith("__") and segment.endswith("__")
    return 0 < len(segment.encode()) <= 1500 and segment not in (".", "..") and not reserved


class ReportSettings(_Section):
    """Delivery-report sync (:mod:`mailgate.reports.sync`): final outcomes POSTed in
    batches to one endpoint of the operator's application, which pulls them that way.

    The endpoint is configured by the operator, not by a tenant, so unlike webhook URLs
    it may be any address, private ones included. Credentials go in ``username`` and
    ``password`` (HTTP basic) or ``token`` (bearer), never in the URL: a URL holding
    ``user:password@`` is refused, so ``mailgate config`` and the logs cannot show one.
    """

    model_config = ConfigDict(allow_inf_nan=False)  # timedelta(inf) raises

    sync_url: str | None = Field(
        None,
        description="http(s) URL the delivery reports are POSTed to; unset: no report sync"
        " (a consumer registered before is paused, see docs/reports.md).",
    )
    username: str | None = Field(None, description="HTTP basic user for sync_url.")
    password: SecretStr | None = Field(None, description="HTTP basic password for sync_url.")
    token: SecretStr | None = Field(
        None, description="Bearer token for sync_url (instead of username and password)."
    )
    batch: int = Field(100, ge=1, le=10000, description="Most reports in one POST.")
    interval: float = Field(
        5.0,
        gt=0,
        description="Seconds between syncs while no report waits; also the first delay"
        " after a failed POST, doubling with each failure up to retry_max_delay.",
    )
    timeout: float = Field(
        30.0, gt=0, description="Seconds the endpoint has to answer one POST (connect included)."
    )
    retry_max_delay: float = Field(
        300.0, gt=0, description="Longest wait between failing syncs, in seconds."
    )
    dead_after: float = Field(
        86400.0,
        gt=0,
        description="A report still not accepted this many seconds after its message"
        " finished is dead-lettered (no more retries; its last error is kept).",
    )

    @field_validator("sync_url")
    @classmethod
    def _plain_http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)  # the messages never repeat the URL: it may hold a secret
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("reports.sync_url must be an http:// or https:// URL with a host")
        if "@" in parts.netloc:
            raise ValueError(
                "reports.sync_url must not hold credentials: set reports.username and"
                " reports.password, or reports.token"
            )
        return url

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> Self:
        if self.token is not None and (self.username or self.password):
            raise ValueError("reports: set either token or username/password, not both")
        if self.password is not None and not self.username:
            raise ValueError("reports: a password needs a username")
        return self


class InboxLimits(_Section):
    """One named inbox's own limits, over the ones of every inbox (unset: those)."""

    max_messages: int | None = Field(
        None, ge=0, description="Captured messages kept in this inbox. 0: no limit."
    )
    max_age_days: float | None = Field(
        None, ge=0, description="This inbox's messages older than this many days go. 0: kept."
    )


class InboxSettings(_Section):
    """How much captured mail is kept, oldest deleted first."""

    max_messages: int = Field(
        1000,
        ge=0,
        le=10_000_000,
        description="Captured messages kept per inbox (of each tenant); past it that inbox's"
        " oldest go as new ones arrive. 0: no limit.",
    )
    sort_by: Literal["none", "auth", "header", "domain"] = Field(
        "none",
        description="What names the inbox captured mail goes to: `none` (all in `default`),"
        " `auth` (the SMTP AUTH username), `header` (an `X-Mailgate-Inbox` header) or"
        " `domain` (the first envelope recipient's domain). Names keep to"
        " [A-Za-z0-9._-], other characters become `_`; `default` when missing.",
    )
    max_age_days: float = Field(
        7.0,
        ge=0,
        le=36500,
        description="Captured messages older than this many days are deleted (checked every"
        " retention.interval). 0: kept however old.",
    )
    boxes: dict[str, InboxLimits] = Field(
        default_factory=dict,
        description="Limits of named inboxes over max_messages and max_age_days, e.g."
        " [inbox.boxes.ci] max_messages = 50, max_age_days = 0.5. Names as inboxes are"
        " named ([A-Za-z0-9._-]).",
    )
    release_allow: list[str] = Field(
        default_factory=list,
        description="Recipient domains a captured message may be released to (each covers"
        " its subdomains), e.g. [example.com]. Set: a release to any other domain is"
        " refused whole. Empty: any domain not in release_deny.",
    )
    release_deny: list[str] = Field(
        default_factory=list,
        description="Recipient domains a captured message is never released to (each covers"
        " its subdomains).",
    )
    link_check_private: bool = Field(
        False,
        description="Let the Mailpit API's link-check request links to loopback, private and"
        " link-local addresses (Mailpit's --allow-internal-http-requests).",
    )
    code_pattern: str | None = Field(
        None,
        description="What else a one-time code may look like for GET /api/v1/inbox/{id}/codes,"
        " besides 4–8 digits: a regular expression a whole word must match, e.g."
        " `[A-Z0-9]{6}` (with a group, the first group is the code). At most 100 characters,"
        " no repeated group holding a repetition or an alternation. `?pattern=` overrides it.",
    )

    @field_validator("boxes")
    @classmethod
    def _box_names(cls, value: dict[str, InboxLimits]) -> dict[str, InboxLimits]:
        from mailgate.inbox.sorting import clean_box

        for name in value:
            if clean_box(name) != name:
                raise ValueError(
                    f"inbox name {name!r}: up to 64 of A-Z a-z 0-9 . _ - with a letter or"
                    f" digit, as captured mail's inboxes are named ({clean_box(name)!r}?)"
                )
        return value

    @field_validator("code_pattern")
    @classmethod
    def _code_pattern_runs(cls, value: str | None) -> str | None:
        if value:
            from mailgate.inbox.extract import compile_code_pattern  # only when one is set

            try:
                compile_code_pattern(value)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
        return value


class RetentionSettings(_Section):
    """How long finished mail and delivered events are kept."""

    days: float = Field(
        7.0,
        gt=0,
        le=36500,
        description="Finished messages (sent, failed, cancelled) and their events are"
        " deleted this many days after their last event, once every outbox consumer has"
        " them.",
    )
    interval: float = Field(600.0, gt=0, le=86400, description="Seconds between purges.")
    enabled: bool = Field(True, description="Purge in this process.")


class PostmarkSettings(_Section):
    base_url: str = Field(
        "https://api.postmarkapp.com", description="Postmark's API (POST {base_url}/email)."
    )
    timeout: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="Seconds to wait for Postmark's answer."
    )


class RetrySettings(_Section):
    """The program's retry defaults: the only copy of these numbers (RetryPolicy has none).

    Issue 6: a first retry after a minute, doubling to at most an hour, spread ±20 %
    so a burst deferred together does not return together; give up after 10 tries or
    3 days, whichever comes first (``failed``, reason ``expired``). RFC 5321 §4.5.4.1
    suggests 30 minutes and 4–5 days for MTAs relaying to the world; a gateway handing
    mail to its own submission server or provider wants to learn of a problem sooner.
    An account overrides any of these in its limits (``retry``).
    """

    initial_delay: float = Field(
        60.0, ge=0, le=2_592_000, description="Seconds before the second attempt."
    )
    multiplier: float = Field(2.0, ge=1, le=100, description="Backoff factor between attempts.")
    max_delay: float = Field(
        3600.0,
        ge=0,
        le=2_592_000,
        description="Longest wait between attempts, seconds (before jitter).",
    )
    max_age: float = Field(
        259200.0, gt=0, le=31_536_000, description="Give up this many seconds after queueing."
    )
    jitter: float = Field(
        0.2, ge=0, lt=1, description="Each delay moves by up to ± this fraction, drawn at random."
    )
    max_attempts: int = Field(
        10, ge=1, le=1000, description="Give up after this many counted attempts."
    )

    def policy(self) -> RetryPolicy:
        return RetryPolicy(**self.model_dump())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILGATE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        # a misspelt or invalid setting must never echo its value: it may be a password
        hide_input_in_errors=True,
    )

    db_url: str | None = Field(
        None, description="sqlite:///path or postgresql://…; default: a file in the data dir."
    )
    relay_url: SecretStr | None = Field(
        None,
        description="Default upstream: smtp://[user:pass@]host:port (STARTTLS when offered),"
        " smtp+starttls:// (STARTTLS required), smtps:// (implicit TLS); ?from= sets the"
        " default sender, ?verify=false skips certificate checks, ?auth_plaintext=true allows"
        " credentials without TLS. Unset: capture everything.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token for /api/v1; required when the web server is not on loopback.",
    )
    default_from: str = Field(
        "mailgate@localhost", description="Sender used when a message names none."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key that encrypts account passwords and tokens at rest"
        " (`mailgate secrets generate` makes one); 'new,old' while rotating with"
        " `mailgate secrets rotate`. `mailgate dev` keeps its own in the data dir;"
        " `serve` without one refuses to store a secret.",
    )
    http: HttpSettings = Field(default_factory=HttpSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    postmark: PostmarkSettings = Field(default_factory=PostmarkSettings)
    attachments: AttachmentSettings = Field(default_factory=AttachmentSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    inbox: InboxSettings = Field(default_factory=InboxSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    firestore: FirestoreSettings = Field(default_factory=FirestoreSettings)
    admin_user: str | None = Field(
        None,
        description="Admin UI user (Basic Auth or the login form; docs/ui.md), set with"
        " admin_pass; MAILGATE_ADMIN_USER, or the old agent's ADMIN_USER.",
    )
    admin_pass: SecretStr | None = Field(
        None,
        description="Admin UI password, set with admin_user; MAILGATE_ADMIN_PASS, or the old"
        " agent's ADMIN_PASS. The API token also opens the UI.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _sources(settings_cls, init_settings, env_settings)

    def check_safe(self) -> None:
        """Refuse combinations that would expose an open API or admin UI (DESIGN §5).
        Beyond loopback the API token is required even with an admin user: the admin
        login guards the UI, the token the API."""
        if (self.admin_user is None) != (self.admin_pass is None):
            raise ConfigError(
                "the admin UI login needs both MAILGATE_ADMIN_USER and MAILGATE_ADMIN_PASS"
            )
        if self.api_token is None and not is_loopback(self.http.host):
            ui = "and the admin UI " if self.admin_user is None else ""
            raise ConfigError(
                f"refusing to serve the API {ui}on {self.http.host} without a token: "
                "set MAILGATE_API_TOKEN (or bind --http to 127.0.0.1)"
            )


def _sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Every source of :class:`Settings`, highest precedence first (the module docstring)."""
    sources = [
        init_settings,
        env_settings,
        _DotEnvSource(settings_cls),
        LegacyEnvSource(settings_cls),
    ]
    if settings_cls.model_config.get("toml_file"):
        sources.append(TomlConfigSettingsSource(settings_cls))
    return tuple(sources)


# --- the environment of the agent mailgate replaces (mapped in mailgate.legacy_env) ---


class LegacyEnvSource(PydanticBaseSettingsSource):
    """The old agent's and the Trigger Email extension's variables (:data:`LEGACY_NAMES`),
    from the process environment, else the ``.env`` file, as mailgate settings.

    It sits below the ``MAILGATE_*`` names (in the environment or ``.env``) and flags, so
    a mailgate name always wins, and above the TOML file, as the environment does. A
    value that does not fit is a :class:`ValidationError` naming the legacy variable, even
    where a ``MAILGATE_*`` name overrides it: a drop-in must not hide a broken leftover.
    After a call, :attr:`origins` says which variables gave each setting.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.origins: dict[str, str] = {}  #: dotted setting → "legacy NAME, … (env|.env)"

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ maps all variables at once

    def __call__(self) -> dict[str, Any]:
        found = self._variables()
        variables = {name: value for name, (value, _) in found.items()}
        values, used = map_legacy(variables, self.settings_cls)
        self.origins = {path: legacy_label(names, found) for path, names in used.items()}
        return values

    def _variables(self) -> dict[str, tuple[str, str]]:
        """``{name: (value, "env" | ".env")}`` of the legacy variables set and not empty."""
        dotenv = _dotenv_vars(self.settings_cls)
        found: dict[str, tuple[str, str]] = {}
        for name in LEGACY_NAMES:
            if os.environ.get(name):
                found[name] = (os.environ[name], "env")
            elif dotenv.get(name):
                found[name] = (str(dotenv[name]), ".env")
        return found


class _DotEnvSource(DotEnvSettingsSource):
    """``.env`` as pydantic-settings reads it, minus the legacy names: those are
    :class:`LegacyEnvSource`'s, not unknown settings (``extra="forbid"`` would refuse
    them). Other names without the prefix are still reported as unknown settings.

    The file's variables are filtered, not the result: there ``MAILGATE_DEFAULT_FROM``
    has become ``default_from``, which only differs from DEFAULT_FROM by case.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        with _readable_dotenv():
            super().__init__(settings_cls)
        self.env_vars = {k: v for k, v in self.env_vars.items() if k.upper() not in LEGACY_NAMES}


def _dotenv_vars(settings_cls: type[BaseSettings]) -> Mapping[str, str | None]:
    """The ``.env`` file's variables, names as written (read as for the settings)."""
    with _readable_dotenv():
        return DotEnvSettingsSource(settings_cls, case_sensitive=True).env_vars


@contextmanager
def _readable_dotenv() -> Iterator[None]:
    """python-dotenv reads ``.env`` as UTF-8 and lets the decoding error out: a traceback."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise ConfigError(f".env is not UTF-8 text (byte {exc.start} is not)") from None


def environ_or_dotenv(name: str) -> str | None:
    """``name`` from the environment or, failing that, from ``.env`` (None if unset or
    empty): for the legacy variables that are the CLI's options, not settings (LOG_LEVEL).
    An unreadable ``.env`` gives nothing here: loading the settings reports it."""
    if os.environ.get(name):
        return os.environ[name]
    try:
        return _dotenv_vars(Settings).get(name) or None
    except ConfigError:
        return None


# --- where each value came from (`mailgate config`) ---


def setting_origins(config_file: Path | None = None, **overrides: Any) -> dict[str, str]:
    """``{dotted setting: where its value came from}`` for every setting some source gives,
    in the order of the settings: ``flag``, ``env MAILGATE_X``, ``.env MAILGATE_X``,
    ``legacy NAME (env)`` / ``(.env)``, ``config file PATH``. Names only, never values."""
    cls = _settings_class(config_file)
    init = InitSettingsSource(cls, init_kwargs=overrides)
    origins: dict[str, str] = {}
    for source in reversed(_sources(cls, init, EnvSettingsSource(cls))):  # higher ones win
        for path in _leaves(source()):
            origins[path] = _origin(source, path, config_file)
    order = {path: i for i, path in enumerate(_setting_paths())}
    return dict(sorted(origins.items(), key=lambda item: order.get(item[0], len(order))))


def _origin(source: PydanticBaseSettingsSource, path: str, config_file: Path | None) -> str:
    if isinstance(source, LegacyEnvSource):
        return source.origins[path]
    if isinstance(source, _DotEnvSource):
        return f".env {_env_name(source, path)}"
    if isinstance(source, EnvSettingsSource):
        return f"env {_env_name(source, path)}"
    if isinstance(source, TomlConfigSettingsSource):
        return f"config file {config_file}"
    return "flag"


def _env_name(source: EnvSettingsSource, path: str) -> str:
    """``MAILGATE_HTTP__PORT``, or ``MAILGATE_HTTP`` when the section came as JSON."""
    nested = f"MAILGATE_{path.upper().replace('.', '__')}"
    if "." in path and nested.lower() not in source.env_vars:
        return f"MAILGATE_{path.partition('.')[0].upper()}"
    return nested


def _leaves(state: Mapping[str, Any]) -> Iterator[str]:
    sections = {name for name, _ in _sections()}
    for key, value in state.items():
        if key in sections and isinstance(value, Mapping):
            yield from (f"{key}.{sub}" for sub in value)
        else:
            yield key


def _sections() -> Iterator[tuple[str, type[BaseModel]]]:
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            yield name, model


def _setting_paths() -> list[str]:
    paths = list(Settings.model_fields)
    for name, model in _sections():
        paths += [f"{name}.{sub}" for sub in model.model_fields]
    return paths


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_db_url(name: str) -> str:
    """A SQLite file in the user's data directory (created if missing)."""
    return f"sqlite:///{data_dir() / name}"


def data_dir() -> Path:
    """The user's mailgate data directory (created if missing): databases, dev's key."""
    directory = Path(platformdirs.user_data_dir("mailgate", appauthor=False))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from flags (``overrides``), environment, ``.env``, the legacy names
    and a TOML file."""
    cls = _settings_class(config_file)
    try:
        with _readable_dotenv():  # pydantic-settings reads .env before our sources do
            return cls(**overrides)
    except SettingsError as exc:  # a section or list given as JSON that is none
        raise ConfigError(_unparsed(exc)) from None


_SOURCE_NAMES = {"EnvSettingsSource": "the environment", "_DotEnvSource": ".env"}


def _unparsed(exc: SettingsError) -> str:
    """``smtp: not valid JSON in the environment (…)`` from pydantic-settings' message,
    which names its source class; the cause says where in the text, never the text."""
    found = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if found is None:
        return str(exc)
    field, source = found.groups()
    where = _SOURCE_NAMES.get(source, source)
    return f"{field}: not valid JSON in {where} (MAILGATE_{field.upper()}…: {exc.__cause__})"


def _settings_class(config_file: Path | None) -> type[Settings]:
    """:class:`Settings`, or a subclass that also reads ``config_file``."""
    if config_file is None:
        return Settings
    if not config_file.is_file():
        raise ConfigError(f"config file not found: {config_file}")
    _check_toml(config_file)

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return FileSettings


def _check_toml(path: Path) -> None:
    """The file must be TOML: pydantic-settings lets tomllib's errors out (a traceback)."""
    try:
        tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:  # its message gives the place, not the text
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply") from None
