"""Where the process logs go and in which shape: human text, or one JSON object a line.

The JSON shape is for log shippers (Loki, Elasticsearch, CloudWatch): every line is a
whole object, so a message with newlines in it or a traceback never splits a record.
It carries only what the log call itself passes — the formatted message and the
``message_id``, ``account`` and ``recipients`` (a count) given with ``extra=`` — so no
body, header or secret can reach it that the message text does not already hold.

The human text format is for a person reading one line: a delivery line there also
names its recipients (``extra={"addresses": …}``, the first five then "+N more"),
which the JSON shape leaves out — it keeps the count.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from mailgate.errors import ConfigError

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "setup_logging"]

#: The ``--log-format`` choices
FORMATS = ("text", "json")

#: Today's human format; the message text names the message id where there is one
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Record attributes that delivery log calls set with ``extra=`` and JSON lines carry
CONTEXT_FIELDS = ("message_id", "account", "recipients")

#: Recipients' addresses a text line names before "+N more"
SHOWN_ADDRESSES = 5


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, with the ``addresses`` a record carries (``extra=``) after
    its message: ``… [to a@example.com, b@example.com +3 more]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        addresses = getattr(record, "addresses", None)
        if not addresses:
            return text
        shown = ", ".join(addresses[:SHOWN_ADDRESSES])
        more = len(addresses) - SHOWN_ADDRESSES
        return f"{text} [to {shown} +{more} more]" if more > 0 else f"{text} [to {shown}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``message``, the :data:`CONTEXT_FIELDS` the record carries,
    and ``exc`` / ``stack`` when it has a traceback or a stack."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            # cached on the record, as logging.Formatter does, for the other handlers
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines (and, ASCII-only, U+2028): one record, one line
        return json.dumps(entry, default=str)


def _utc_time(record: logging.LogRecord) -> str:
    at = datetime.fromtimestamp(record.created, tz=UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def setup_logging(level: str, fmt: str = "text", file: str | None = None) -> None:
    """Log at ``level`` in ``fmt`` to ``file`` (appended to, UTF-8) or else to stderr.

    Like :func:`logging.basicConfig`, it leaves a root logger that already has handlers
    alone (a test harness or an embedding program configured logging itself); the
    library loggers are quieted either way. An unknown format or a log file that cannot
    be opened is a :class:`ConfigError`: the process must not start without its logs.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, handlers=[_handler(fmt, file)])
    _quiet_libraries(level)


def _handler(fmt: str, file: str | None) -> logging.Handler:
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(file, mode="a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open log file {file}: {exc.strerror or exc}") from exc
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def _quiet_libraries(level: str) -> None:
    # aiosmtpd logs every SMTP command at INFO and warns about its own internals
    # (Session.login_data) on every AUTH; keep its real warnings only.
    smtp_log = logging.getLogger("mail.log")
    smtp_log.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    smtp_log.addFilter(lambda record: "login_data" not in record.getMessage())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every request at INFO; `mailgate send` prints what matters itself
    logging.getLogger("httpx").setLevel(logging.WARNING)
