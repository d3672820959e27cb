"""``JsonFormatter``: one parseable object a line, with the delivery fields and tracebacks;
``TextFormatter``: the human line, naming a delivery's recipients."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

from mailgate.errors import ConfigError
from mailgate.logs import JsonFormatter, TextFormatter, setup_logging


def _record(
    msg: str = "%s sent via %s",
    args: tuple[object, ...] = ("msg_01J", "relay"),
    *,
    extra: dict[str, Any] | None = None,
    exc: bool = False,
) -> logging.LogRecord:
    """A record as ``logger.info(msg, *args, extra=extra)`` makes it."""
    exc_info = None
    if exc:
        try:
            raise RuntimeError("the store went away")
        except RuntimeError:
            exc_info = sys.exc_info()
    logger = logging.getLogger("mailgate.deliver.dispatcher")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, msg, args, exc_info, extra=extra
    )


def _line(record: logging.LogRecord) -> dict[str, Any]:
    text = JsonFormatter().format(record)
    assert "\n" not in text and len(text.splitlines()) == 1, text
    entry: dict[str, Any] = json.loads(text)
    return entry


def test_fields() -> None:
    record = _record()
    entry = _line(record)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "mailgate.deliver.dispatcher"
    assert entry["message"] == "msg_01J sent via relay"
    assert entry["time"].endswith("Z")
    at = datetime.fromisoformat(entry["time"])
    assert at.utcoffset() == timedelta(0)
    assert len(entry["time"].split(".")[1]) == len("123Z")  # milliseconds
    assert abs(at.timestamp() - record.created) < 0.001
    assert set(entry) == {"time", "level", "logger", "message"}  # nothing else invented


def test_delivery_fields_from_extra() -> None:
    entry = _line(_record(extra={"message_id": "msg_01J", "account": "acme/ses", "recipients": 3}))
    assert entry["message_id"] == "msg_01J"
    assert entry["account"] == "acme/ses"
    assert entry["recipients"] == 3


def test_a_missing_account_is_left_out() -> None:
    """A captured message went through no account: the field is absent, not null."""
    entry = _line(_record(extra={"message_id": "msg_01J", "account": None, "recipients": 1}))
    assert "account" not in entry
    assert entry["message_id"] == "msg_01J"


def test_exception_traceback() -> None:
    entry = _line(_record(exc=True))
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the store went away" in entry["exc"]
    assert entry["message"] == "msg_01J sent via relay"


def test_one_line_per_record_with_newlines_and_unicode() -> None:
    message = "line one\nline two\r\nthird\u2028fourth ✉"
    entry = _line(_record("%s", (message,)))
    assert entry["message"] == message


def test_the_text_line_names_the_recipients_the_json_line_counts_them() -> None:
    addresses = tuple(f"r{n}@example.com" for n in range(1, 8))
    extra = {"message_id": "msg_01J", "recipients": 7, "addresses": addresses}
    record = _record(extra=extra)
    text = TextFormatter().format(record)
    assert text.endswith(
        " INFO mailgate.deliver.dispatcher: msg_01J sent via relay [to r1@example.com,"
        " r2@example.com, r3@example.com, r4@example.com, r5@example.com +2 more]"
    ), text
    assert "r6@example.com" not in text
    few = TextFormatter().format(_record(extra={**extra, "addresses": addresses[:2]}))
    assert few.endswith("msg_01J sent via relay [to r1@example.com, r2@example.com]"), few
    plain = TextFormatter().format(_record())
    assert plain.endswith(" INFO mailgate.deliver.dispatcher: msg_01J sent via relay")
    entry = _line(record)
    assert entry["recipients"] == 7
    assert "addresses" not in entry and "example.com" not in json.dumps(entry)


def test_unknown_format_refuses() -> None:
    with pytest.raises(ConfigError, match="log format"):
        setup_logging("INFO", "xml")
