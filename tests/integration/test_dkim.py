"""DKIM signing per account, verified with dkimpy on the bytes a real upstream received."""

from __future__ import annotations

import re
from pathlib import Path

import dkim
import pytest

from mailgate.deliver.content import SendTimeContent
from mailgate.deliver.dkim import check_private_key, sign
from mailgate.deliver.transport import Envelope, Outgoing
from mailgate.deliver.transports import transport_for
from mailgate.mime import build_message
from mailgate.model import Account, AccountTransport, Message, Outcome, SmtpAuth, SmtpSecurity
from mailgate.settings import AttachmentSettings, DeliverySettings
from tests.builders import parse_submitted, submitted
from tests.content_peers import rsa_key_pair
from tests.peers import Upstream

SELECTOR, DOMAIN = "mg2026", "shop.example"


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_key_pair()


def dns_for(public: str) -> object:
    """dkimpy's DNS lookup, answering the selector's TXT record (RFC 6376 §3.6.2.1)."""

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode():
            return f"v=DKIM1; k=rsa; p={public}".encode()
        return None

    return txt


def account(port: int, private: str | None) -> Account:
    return Account(
        id="news",
        tenant="t1",
        transport=AccountTransport.SMTP,
        from_=(DOMAIN,),
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security=SmtpSecurity.NONE,
        smtp_auth=SmtpAuth.NONE,
        is_outbound_enabled=True,
        dkim_domain=DOMAIN if private else None,
        dkim_selector=SELECTOR if private else None,
        dkim_private_key=private,
    )


def newsletter(tmp_path: Path) -> Message:
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "menu.pdf").write_bytes(b"%PDF menu")
    return parse_submitted(
        submitted(
            account="news",
            **{"from": "Shop News <news@shop.example>"},
            to=["a@example.org", "Bé <b@example.org>"],
            subject="Spring offers – 20 % off",
            html="<p>Hello</p>",
            list_unsubscribe={"url": "https://shop.example/u/42", "one_click": True},
            attachments=[{"filename": "menu.pdf", "path": "vol:menu.pdf"}],
        )
    )


async def send_through_upstream(message: Message, acct: Account, tmp_path: Path) -> None:
    async def lookup(message: Message) -> Account | None:
        return acct if (message.tenant, message.account) == (acct.tenant, acct.id) else None

    settings = AttachmentSettings(volumes={"vol": tmp_path / "vol"})
    transport = transport_for(acct, settings=DeliverySettings(), local_hostname="gw.test")
    envelope = Envelope("news@shop.example", message.envelope_recipients, message.id, "t1")
    async with SendTimeContent(settings, accounts=lookup) as prepare:
        outgoing = Outgoing(message, envelope, build_message, prepare=prepare)
        result = await transport.send(outgoing)
    await transport.aclose()
    assert result.status is Outcome.SENT, result.detail


async def test_the_upstream_receives_a_signature_that_verifies(
    keys: tuple[str, str], tmp_path: Path
) -> None:
    private, public = keys
    async with Upstream() as up:
        await send_through_upstream(newsletter(tmp_path), account(up.port, private), tmp_path)
        [received] = up.received
    raw = received.raw
    assert raw.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=shop.example;")
    assert dkim.verify(raw, dnsfunc=dns_for(public))
    signed = re.search(rb"h=([^;]+);", raw.replace(b"\r\n", b"").replace(b" ", b""))
    assert signed is not None
    fields = signed.group(1).split(b":")
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe"):
        assert name in fields
    assert b"list-unsubscribe-post" in fields and fields.count(b"from") == 2  # over-signed
    [pdf] = received.message.iter_attachments()
    assert pdf.get_content() == b"%PDF menu"  # the path attachment, read at send time


async def test_a_changed_message_no_longer_verifies(keys: tuple[str, str], tmp_path: Path) -> None:
    private, public = keys
    async with Upstream() as up:
        await send_through_upstream(newsletter(tmp_path), account(up.port, private), tmp_path)
        [received] = up.received
    tampered = received.raw.replace(b"To: a@example.org", b"To: z@example.org", 1)
    assert tampered != received.raw
    assert not dkim.verify(tampered, dnsfunc=dns_for(public))
    added_from = received.raw.replace(b"\r\nFrom:", b"\r\nFrom: evil@x.example\r\nFrom:", 1)
    assert not dkim.verify(added_from, dnsfunc=dns_for(public))


async def test_an_account_without_dkim_sends_unsigned(tmp_path: Path) -> None:
    async with Upstream() as up:
        await send_through_upstream(newsletter(tmp_path), account(up.port, None), tmp_path)
        [received] = up.received
    assert b"DKIM-Signature" not in received.raw


def test_a_bad_key_is_refused_without_showing_it() -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="not a PEM RSA private key") as caught:
        check_private_key(secret)
    assert "bm90IGEga2V5" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        sign(b"From: a@b.example\r\n\r\nx", domain=DOMAIN, selector=SELECTOR, private_key=secret)
    assert "bm90IGEga2V5" not in str(caught.value)


def test_a_good_key_passes_the_check(keys: tuple[str, str]) -> None:
    check_private_key(keys[0])
