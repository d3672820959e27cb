"""Delivery: the dispatcher and the transports it sends through."""

from mailgate.deliver.capture import CaptureTransport
from mailgate.deliver.dispatcher import Dispatcher
from mailgate.deliver.relay import RelayConfig, parse_relay_url
from mailgate.deliver.smtp import SmtpTransport
from mailgate.deliver.transport import Envelope, Outgoing, Transport

__all__ = [
    "CaptureTransport",
    "Dispatcher",
    "Envelope",
    "Outgoing",
    "RelayConfig",
    "SmtpTransport",
    "Transport",
    "parse_relay_url",
]
