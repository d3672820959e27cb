"""The SSRF guard: which addresses URL attachments may reach, judged after resolution."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from mailgate.deliver.ssrf import AddressRefused, NetGuard, Resolver, UnresolvableHost, refusal


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not a public"),  # RFC 6598 shared address space
        ("198.18.0.1", "private"),  # RFC 2544 benchmarking: Python counts it private
        ("240.0.0.1", "private"),  # reserved (RFC 1112): likewise
    ],
)
def test_non_public_addresses_are_refused(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def answering(*addresses: str) -> tuple[list[tuple[str, int]], Resolver]:
    """A real resolver function that answers ``addresses`` and records its questions."""
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> Sequence[str]:
        asked.append((host, port))
        return addresses

    return asked, resolve


async def test_a_name_resolving_to_the_metadata_address_is_refused() -> None:
    asked, resolver = answering("169.254.169.254")
    guard = NetGuard(resolver=resolver)
    with pytest.raises(AddressRefused, match=r"metadata.example resolves to 169\.254\.169\.254"):
        await guard.resolve("metadata.example", 80)
    assert asked == [("metadata.example", 80)]


async def test_every_address_of_the_answer_is_checked() -> None:
    """One public and one private answer: a client could connect to either."""
    _, resolver = answering("93.184.216.34", "10.0.0.5")
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.5"):
        await NetGuard(resolver=resolver).resolve("mixed.example", 443)


async def test_the_checked_address_is_the_one_returned() -> None:
    _, resolver = answering("93.184.216.34", "93.184.216.35")
    guard = NetGuard(resolver=resolver)
    assert await guard.resolve("public.example", 443) == "93.184.216.34"


async def test_real_dns_for_localhost_is_refused() -> None:
    with pytest.raises(AddressRefused, match=r"localhost resolves to .*loopback"):
        await NetGuard().resolve("localhost", 80)


async def test_ip_literals_are_checked_without_dns() -> None:
    asked, resolver = answering("93.184.216.34")
    guard = NetGuard(resolver=resolver)
    with pytest.raises(AddressRefused, match=r"127\.0\.0\.1 is a loopback address"):
        await guard.resolve("127.0.0.1", 80)
    with pytest.raises(AddressRefused, match="metadata"):
        await guard.resolve("fd00:ec2::254", 80)
    assert asked == []


async def test_private_networks_or_named_hosts_can_be_allowed() -> None:
    _, resolver = answering("127.0.0.1")
    anything = NetGuard(allow_private=True, resolver=resolver)
    assert await anything.resolve("files.internal", 80) == "127.0.0.1"
    named = NetGuard(allowed_hosts=["Files.Internal"], resolver=resolver)
    assert await named.resolve("files.internal", 80) == "127.0.0.1"
    with pytest.raises(AddressRefused):
        await named.resolve("other.internal", 80)


async def test_no_answer_is_unresolvable_not_allowed() -> None:
    _, resolver = answering()
    with pytest.raises(UnresolvableHost):
        await NetGuard(resolver=resolver).resolve("nowhere.example", 80)
    with pytest.raises(UnresolvableHost):
        await NetGuard().resolve("no-such-host.invalid", 80)  # RFC 6761: never resolves
