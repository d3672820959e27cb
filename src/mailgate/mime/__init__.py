"""RFC 5322 / MIME: build outgoing messages and parse captured ones. No I/O of its own:
a streamed parse writes only to the files its caller's ``AttachmentSink`` opens."""

from mailgate.mime.build import build_message
from mailgate.mime.parse import AttachmentSink, ParsedAttachment, ParsedMessage, parse_message

__all__ = [
    "AttachmentSink",
    "ParsedAttachment",
    "ParsedMessage",
    "build_message",
    "parse_message",
]
