import pytest

from mailgate.deliver.relay import Security, parse_relay_url
from mailgate.errors import ConfigError


def test_plain_with_credentials_and_default_sender() -> None:
    relay = parse_relay_url("smtp://us%40er:p%3Ass@mail.example.com:2525?from=app@example.com")
    assert (relay.host, relay.port, relay.security) == ("mail.example.com", 2525, Security.PLAIN)
    assert (relay.username, relay.password) == ("us@er", "p:ss")
    assert relay.default_from == "app@example.com"
    assert "p:ss" not in repr(relay) and "p:ss" not in relay.name


@pytest.mark.parametrize(
    ("url", "security", "port"),
    [
        ("smtp://h", Security.PLAIN, 25),
        ("smtp+starttls://h", Security.STARTTLS, 587),
        ("smtps://h", Security.TLS, 465),
    ],
)
def test_schemes_and_default_ports(url: str, security: Security, port: int) -> None:
    relay = parse_relay_url(url)
    assert relay.security is security and relay.port == port and relay.verify_tls


def test_verify_can_be_turned_off() -> None:
    assert not parse_relay_url("smtps://h?verify=false").verify_tls


@pytest.mark.parametrize("url", ["http://h", "smtp://", "smtp://h:notaport"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_relay_url(url)
