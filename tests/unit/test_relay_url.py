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


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("smtp://u:secret@127.0.0.1:2526", "smtp://127.0.0.1:2526"),
        ("smtp+starttls://mail.example.com", "smtp+starttls://mail.example.com:587"),
        ("smtps://u:secret@mail.example.com", "smtps://mail.example.com:465"),
        ("smtp://[::1]:2525", "smtp://[::1]:2525"),
    ],
)
def test_name_is_the_url_without_credentials(url: str, name: str) -> None:
    """The start-up log and every attempt show it (it read ``smtp:127.0.0.1:2526``)."""
    relay = parse_relay_url(url)
    assert relay.name == name and parse_relay_url(relay.name).name == name
    assert "secret" not in repr(relay)


def test_credentials_go_only_over_tls_unless_the_url_allows_plaintext() -> None:
    assert not parse_relay_url("smtp://u:p@h").auth_plaintext
    assert parse_relay_url("smtp://u:p@h?auth_plaintext=true").auth_plaintext
    assert parse_relay_url("smtp://u:p@h?auth_plaintext=1&from=a@example.com").auth_plaintext
    assert not parse_relay_url("smtp://u:p@h?auth_plaintext=false").auth_plaintext


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("smtp://h?auth_plaintext=ture", "'auth_plaintext' must be true or false, not 'ture'"),
        ("smtp://h?verify=off", "'verify' must be true or false, not 'off'"),
        ("smtp://h?auth_plain=true", "'auth_plain' is not one of from, verify, auth_plaintext"),
        ("smtp://h?verify=true&verify=false", "'verify' is given more than once"),
    ],
)
def test_misspelt_parameters_are_refused_not_ignored(url: str, reason: str) -> None:
    """``verify=off`` used to mean verify *on*; a typo in auth_plaintext meant false."""
    with pytest.raises(ConfigError) as caught:
        parse_relay_url(url)
    assert str(caught.value) == f"relay URL parameter {reason}"


@pytest.mark.parametrize(
    ("url", "verify"),
    [
        ("smtp://h", False),  # opportunistic (RFC 7435): encryption when offered, no more
        ("smtp://u:p@h", True),  # credentials to protect: only to the real server
        ("smtp://u:p@h?verify=false", False),
        ("smtp+starttls://h", True),
        ("smtps://h", True),
        ("smtps://h?verify=false", False),
    ],
)
def test_which_certificates_are_checked(url: str, verify: bool) -> None:
    assert parse_relay_url(url).verify_certificate is verify
