"""RFC 5322 / MIME: build outgoing messages and parse captured ones. No I/O."""

from mailgate.mime.build import build_message
from mailgate.mime.parse import ParsedAttachment, ParsedMessage, parse_message

__all__ = ["ParsedAttachment", "ParsedMessage", "build_message", "parse_message"]
