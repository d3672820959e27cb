"""SMTP submission (issue 9): ``serve`` with ``smtp.mode = submission`` takes mail from
authenticated SMTP users into the queue and delivers it like REST mail. Real peers: a
gateway with its SMTP server, smtplib clients, and an aiosmtpd upstream."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.util import greenlet_spawn

from mailgate.app import Gateway, Mode
from mailgate.ingest.tls import self_signed
from mailgate.store import Database
from mailgate.store.auth_failures import AuthFailureStore
from tests.integration.conftest import (
    GatewayFactory,
    api,
    drop_table,
    engine_url,
    fast_settings,
    fresh_postgres_database,
    wait_for_state,
)
from tests.peers import Upstream

PASSWORD = "app-password-1"

BODY = b"line one\r\n..a line starting with a dot\r\n\xc3\xa9t\xc3\xa9 in 8 bits\r\n"


def _message(
    sender: str = "App <app@example.com>", *, extra: bytes = b"", body: bytes = BODY
) -> bytes:
    return (
        b"From: " + sender.encode() + b"\r\nTo: Someone <to@example.org>\r\n"
        b"Subject: submitted\r\nMessage-ID: <m1@example.com>\r\n" + extra + b"\r\n" + body
    )


@pytest.fixture
async def gateway(start_gateway: GatewayFactory, upstream: Upstream) -> AsyncIterator[Gateway]:
    async with start_gateway(relay_url=upstream.url, smtp={"mode": "submission"}) as gw:
        async with api(gw) as client:
            await _add_user(client, "app", senders=["@example.com"])
        yield gw


async def _add_user(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    user = {"username": name, "password": PASSWORD, **fields}
    reply = await client.post("/smtp-users", json=user)
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def _plain(username: str, password: str) -> str:
    """AUTH PLAIN's argument (RFC 4616)."""
    return "PLAIN " + base64.b64encode(f"\0{username}\0{password}".encode()).decode()


def _address(gw: Gateway) -> tuple[str, int]:
    assert gw.smtp_address is not None
    return gw.smtp_address


def _send(
    address: tuple[str, int],
    raw: bytes,
    *,
    login: tuple[str, str] | None = ("app", PASSWORD),
    mail_from: str = "app@example.com",
    to: tuple[str, ...] = ("to@example.org", "hidden@example.net"),
) -> tuple[int, bytes]:
    """Log in and send; the reply to DATA (code, text)."""
    with smtplib.SMTP(*address, timeout=20) as smtp:
        smtp.ehlo("client.test")
        if login is not None:
            smtp.login(*login)
        code, text = smtp.mail(mail_from)
        if code != 250:
            return code, text
        for rcpt in to:
            smtp.rcpt(rcpt)
        return smtp.data(raw)


async def test_a_submitted_message_is_queued_before_250_and_delivered_as_sent(
    gateway: Gateway, upstream: Upstream
) -> None:
    raw = _message(extra=b"Bcc: hidden@example.net\r\n")
    address = _address(gateway)
    code, text = await asyncio.to_thread(_send, address, raw, mail_from="bounce@example.com")
    assert code == 250, text
    message_id = text.decode().rsplit(" ", 1)[1]
    async with api(gateway) as client:
        queued = await client.get(f"/messages/{message_id}")  # committed before the 250
        assert queued.status_code == 200
        sent = await wait_for_state(client, message_id, "sent")
        listed = (await client.get("/messages")).json()["items"]
    assert [m["id"] for m in listed] == [message_id]
    assert sent["to"] == ["to@example.org", "hidden@example.net"]
    assert sent["subject"] == "submitted"
    [attempt] = sent["attempts"]
    assert set(attempt["recipients"]) == {"to@example.org", "hidden@example.net"}
    [got] = upstream.received
    assert got.mail_from == "bounce@example.com"  # the envelope sender as given
    assert sorted(got.rcpt_tos) == ["hidden@example.net", "to@example.org"]
    head, _, body = got.raw.partition(b"\r\n\r\n")
    assert body == BODY  # the content byte for byte, dots and 8-bit included
    assert head.startswith(b"Received: from client.test ([127.0.0.1])")
    parsed = BytesParser(policy=default_policy).parsebytes(got.raw)
    assert parsed["Bcc"] is None  # its recipients are in the envelope only
    assert parsed["Message-ID"] == "<m1@example.com>"  # kept
    assert parsed["Date"] is not None  # added where missing
    assert f"id {message_id}" in parsed["Received"]


@pytest.mark.parametrize("field", [b"", b"Message-ID:\r\n", b"Message-ID:  \r\n \r\n"])
async def test_a_message_id_is_added_when_missing_or_blank(
    gateway: Gateway, upstream: Upstream, field: bytes
) -> None:
    raw = _message().replace(b"Message-ID: <m1@example.com>\r\n", field)
    code, text = await asyncio.to_thread(_send, _address(gateway), raw)
    assert code == 250, text
    await upstream.wait_for(1)
    got = upstream.received[0].raw
    parsed = BytesParser(policy=default_policy).parsebytes(got)
    assert parsed["Message-ID"].endswith("@mailgate.local>")
    assert got.lower().count(b"message-id:") == 1  # the blank one is gone


async def test_mail_before_auth_is_530_and_a_wrong_password_535(gateway: Gateway) -> None:
    def attempt() -> tuple[tuple[int, bytes], int]:
        with smtplib.SMTP(*_address(gateway), timeout=20) as smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("auth")  # offered without TLS: the client is on loopback
            before = smtp.mail("app@example.com")
            smtp.rset()
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                smtp.login("app", "not-the-password")
            return before, refused.value.smtp_code

    (code, text), refused = await asyncio.to_thread(attempt)
    assert (code, text[:5]) == (530, b"5.7.0")
    assert refused == 535


async def test_an_unknown_user_is_refused_like_a_wrong_password(gateway: Gateway) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        await asyncio.to_thread(_send, _address(gateway), _message(), login=("nobody", PASSWORD))
    assert refused.value.smtp_code == 535


async def test_senders_bound_mail_from_and_the_from_header(gateway: Gateway) -> None:
    address = _address(gateway)
    code, text = await asyncio.to_thread(_send, address, _message(), mail_from="app@evil.test")
    assert (code, text[:5]) == (553, b"5.7.1")
    code, text = await asyncio.to_thread(_send, address, _message("Boss <boss@evil.test>"))
    assert (code, text[:5]) == (550, b"5.7.1")
    assert b"boss@evil.test" in text
    async with api(gateway) as client:
        assert (await client.get("/messages")).json()["items"] == []


@pytest.mark.parametrize(
    ("sender", "refusal"),
    [
        ("=?utf-8?q?app=40example.com?= <boss@evil.test>", b"5.7.1"),  # a name, then
        # decoded, these read as "app@example.com (" <boss@evil.test>: as sent, they
        # are no address list at all
        ("=?utf-8?q?app=40example.com_(?= <boss@evil.test> =?utf-8?q?)?=", b"5.6.0"),
        ('"x" =?utf-8?q?<app=40example.com>_(?= <boss@evil.test> =?utf-8?q?)?=', b"5.6.0"),
    ],
)
async def test_an_encoded_word_is_never_an_address(
    gateway: Gateway, sender: str, refusal: bytes
) -> None:
    """RFC 2047 §5: an encoded word is display text. The check read the From: field
    decoded, and let these out as app@example.com's."""
    code, text = await asyncio.to_thread(_send, _address(gateway), _message(sender))
    assert (code, text[:5]) == (550, refusal), text
    async with api(gateway) as client:
        assert (await client.get("/messages")).json()["items"] == []


@pytest.mark.parametrize("sender", ['x@["', "],.aIPv6:", '!IPv6:;IPv6:("\\;.', "x, .@", "=?@[ "])
async def test_a_from_field_that_breaks_the_address_parser_is_refused(
    gateway: Gateway, sender: str
) -> None:
    """The standard library's address parser raises AttributeError, TypeError or
    UnboundLocalError on these, not HeaderParseError: the client heard "451 local error,
    try again later" (and would, for ever), the log a traceback. It is a malformed From:,
    550 5.6.0 as any other."""
    code, text = await asyncio.to_thread(_send, _address(gateway), _message(sender))
    assert (code, text[:5]) == (550, b"5.6.0"), text
    async with api(gateway) as client:
        assert (await client.get("/messages")).json()["items"] == []


@pytest.mark.parametrize(
    "message",
    [_message(extra=b"Subject: n\x00ul\r\n"), _message(body=b"a NUL \x00 in the body\r\n")],
)
async def test_a_nul_in_a_message_is_refused(gateway: Gateway, message: bytes) -> None:
    """Text, 8-bit included (RFC 6152), holds no NUL; only BINARYMIME, which is not
    offered, could carry one. It was relayed as it came, to a next hop that may cut
    the message there."""
    code, text = await asyncio.to_thread(_send, _address(gateway), message)
    assert (code, text[:5]) == (550, b"5.6.0"), text
    async with api(gateway) as client:
        assert (await client.get("/messages")).json()["items"] == []


async def test_a_from_field_past_a_thousand_others_is_counted(gateway: Gateway) -> None:
    """The parser keeps the first 1,000 header fields: a second From: after them was
    never seen by the check, and went out with the message."""
    extra = b"".join(b"X-P%d: a\r\n" % i for i in range(1005)) + b"From: boss@evil.test\r\n"
    code, text = await asyncio.to_thread(_send, _address(gateway), _message(extra=extra))
    assert (code, text[:5]) == (550, b"5.6.0")


@pytest.mark.parametrize("lines", [0, 30_000], ids=["small", "2 MiB"])  # 2 MiB: counted as it came
async def test_a_smuggled_second_message_is_refused_with_the_first(
    gateway: Gateway, upstream: Upstream, lines: int
) -> None:
    smuggled = (b"x" * 70 + b"\r\n") * lines + (
        b"hello\n.\nMAIL FROM:<app@example.com>\nRCPT TO:<victim@example.org>\nDATA\n"
        b"From: app@example.com\nSubject: smuggled\n\nspoofed\n"
    )
    code, text = await asyncio.to_thread(_send, _address(gateway), _message(body=smuggled))
    assert (code, text[:5]) == (550, b"5.5.2")
    await asyncio.sleep(0.3)
    async with api(gateway) as client:
        assert (await client.get("/messages")).json()["items"] == []
    assert upstream.received == []


async def test_failed_auth_is_rate_limited_per_client(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    smtp_settings = {"mode": "submission", "auth_max_failures": 3}
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")

        def hammer() -> list[int]:
            with smtplib.SMTP(*_address(gw), timeout=20) as smtp:
                smtp.ehlo("client.test")
                codes = [smtp.docmd("AUTH", _plain("app", "wrong-password"))[0] for _ in range(3)]
                codes.append(smtp.docmd("AUTH", _plain("app", PASSWORD))[0])
            return codes

        assert await asyncio.to_thread(hammer) == [535, 535, 535, 421]
        # a new connection from the same address, with the right password, waits too
        with pytest.raises(smtplib.SMTPException) as refused:
            await asyncio.to_thread(_send, _address(gw), _message(), login=("app", PASSWORD))
        assert "421" in str(refused.value) or isinstance(
            refused.value, smtplib.SMTPServerDisconnected
        )


def _code(smtp: smtplib.SMTP) -> int:
    """The reply's code; 421 for a connection closed instead (after its 421)."""
    try:
        return smtp.getreply()[0]
    except smtplib.SMTPServerDisconnected:
        return 421


async def test_passwords_checked_at_once_count_against_the_limit(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A password is checked off the loop; 40 sessions that each sent one wrong AUTH at
    the same moment all had theirs checked (40 guesses where 3 were allowed). Checks in
    progress now count: at most 3 are answered 535, the rest 421."""
    smtp_settings = {"mode": "submission", "auth_max_failures": 3}
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")

        def burst() -> list[int]:
            sessions = [smtplib.SMTP(*_address(gw), timeout=20) for _ in range(40)]
            try:
                for smtp in sessions:
                    smtp.ehlo("client.test")
                for smtp in sessions:  # all sent before any is read
                    smtp.putcmd("AUTH", _plain("app", "wrong-password"))
                with ThreadPoolExecutor(40) as pool:
                    return list(pool.map(_code, sessions))
            finally:
                for smtp in sessions:
                    smtp.close()

        codes = await asyncio.to_thread(burst)
    assert codes.count(535) == 3 and codes.count(421) == 37, codes


async def test_a_blocked_client_s_waiting_sessions_are_never_checked(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """Sessions left at AUTH LOGIN's password prompt before the address was blocked had
    their guesses checked afterwards, and the right password logged in and sent mail."""
    smtp_settings = {"mode": "submission", "auth_max_failures": 3}
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")

        def attack() -> tuple[list[int], int]:
            staged = [smtplib.SMTP(*_address(gw), timeout=20) for _ in range(2)]
            for smtp in staged:
                smtp.ehlo("client.test")
                login = base64.b64encode(b"app").decode()
                assert smtp.docmd("AUTH", "LOGIN " + login)[0] == 334  # the password prompt
            with smtplib.SMTP(*_address(gw), timeout=20) as smtp:
                smtp.ehlo("client.test")
                failures = [smtp.docmd("AUTH", _plain("app", "wrong"))[0] for _ in range(3)]
            password = base64.b64encode(PASSWORD.encode()).decode()
            try:
                code = staged[0].docmd(password)[0]
            except smtplib.SMTPServerDisconnected:
                code = 421
            for smtp in staged:
                smtp.close()
            return failures, code

        failures, code = await asyncio.to_thread(attack)
    assert failures == [535, 535, 535]
    assert code == 421  # blocked: the right password is not even checked
    assert upstream.received == []


async def test_a_client_leaving_during_its_check_still_counts(
    start_gateway: GatewayFactory, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that hung up while its password was checked left nothing counted, so it
    could have any number of passwords checked (each a hash) and was never blocked."""
    from mailgate.services.smtp_users import SmtpUsersService

    check = SmtpUsersService.authenticate

    async def slow(self: SmtpUsersService, username: str, password: str) -> Any:
        await asyncio.sleep(0.3)  # a hash that takes a while: the client leaves first
        return await check(self, username, password)

    monkeypatch.setattr(SmtpUsersService, "authenticate", slow)
    smtp_settings = {"mode": "submission", "auth_max_failures": 3}
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")
        host, port = _address(gw)
        for _ in range(3):
            reader, writer = await asyncio.open_connection(host, port)
            await reader.readline()
            auth = b"AUTH " + _plain("app", "wrong").encode()
            writer.write(b"EHLO client.test\r\n" + auth + b"\r\n")
            while not (await reader.readline()).startswith(b"250 "):
                pass
            await asyncio.sleep(0.1)  # the check has begun
            writer.transport.abort()
        await asyncio.sleep(0.5)

        def again() -> int:
            with smtplib.SMTP(host, port, timeout=20) as smtp:
                smtp.ehlo("client.test")
                return smtp.docmd("AUTH", _plain("app", PASSWORD))[0]

        assert await asyncio.to_thread(again) == 421


@pytest.fixture(params=["sqlite", "postgresql"])
async def shared_store(request: pytest.FixtureRequest, db_url: str) -> str:
    """One store for two gateways: a SQLite file, or a database on the session's cluster."""
    return await engine_url(request, db_url, "mailgate_auth_shared")


def _logins(address: tuple[str, int], *passwords: str) -> list[int]:
    """AUTH PLAIN as ``app`` with each password in turn on one session: the codes (421 for
    a session closed after its 421)."""
    codes = []
    with smtplib.SMTP(*address, timeout=20) as smtp:
        smtp.ehlo("client.test")
        for password in passwords:
            try:
                codes.append(smtp.docmd("AUTH", _plain("app", password))[0])
            except smtplib.SMTPServerDisconnected:
                codes.append(421)
                break
    return codes


async def test_failed_auth_in_one_process_is_refused_in_another(
    upstream: Upstream, shared_store: str
) -> None:
    """Two gateways (each its own engine, as two ``serve`` processes behind one load
    balancer) on one store: the limit was per process, so each allowed its own 3 guesses.
    Now 3 failures at one make the other refuse the address, right password or not."""
    smtp_settings = {"mode": "submission", "auth_max_failures": 3}
    settings = fast_settings(shared_store, relay_url=upstream.url, smtp=smtp_settings)
    async with Gateway(settings, mode=Mode.SERVE) as one, Gateway(settings, mode=Mode.SERVE) as two:
        async with api(one) as client:
            await _add_user(client, "app")
        assert await asyncio.to_thread(_logins, _address(one), "wrong", "wrong") == [535, 535]
        assert await asyncio.to_thread(_logins, _address(two), "wrong") == [535]  # the third
        # neither gateway counted 3 itself; the store did
        assert await asyncio.to_thread(_logins, _address(one), PASSWORD) == [421]
        assert await asyncio.to_thread(_logins, _address(two), PASSWORD) == [421]
        # and the one that learnt it from the store refuses at once, without a query
        one_address = _address(one)

        def refused_at_auth() -> int:
            with smtplib.SMTP(*one_address, timeout=20) as smtp:
                smtp.ehlo("client.test")
                try:
                    return smtp.docmd("AUTH", "LOGIN")[0]  # before any password prompt
                except smtplib.SMTPServerDisconnected:
                    return 421

        assert await asyncio.to_thread(refused_at_auth) == 421


async def test_auth_is_454_when_the_store_cannot_count_failures(
    start_gateway: GatewayFactory, upstream: Upstream, db_url: str
) -> None:
    """The store unreadable while a password is about to be checked: no count to vouch
    for the guess, so it is not checked (a temporary 454, RFC 4954 §6) rather than let
    through unlimited."""
    smtp_settings = {"mode": "submission", "auth_max_failures": 3}
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")
        assert await asyncio.to_thread(_logins, _address(gw), PASSWORD) == [235]
        await drop_table(db_url, "auth_failures")
        assert await asyncio.to_thread(_logins, _address(gw), PASSWORD, PASSWORD) == [454, 454]


async def test_auth_is_454_and_counts_no_failure_when_the_users_cannot_be_read(
    start_gateway: GatewayFactory, upstream: Upstream, db_url: str
) -> None:
    """The SMTP users unreadable during the check: no verdict, so a temporary 454 and
    no failure counted. It was taken as a wrong password: 535, and after
    ``auth_max_failures`` of them the address was locked out for the window."""
    smtp_settings = {"mode": "submission", "auth_max_failures": 2}
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")
        await drop_table(db_url, "smtp_users")
        codes = await asyncio.to_thread(_logins, _address(gw), *["wrong"] * 4)
        assert codes == [454] * 4
    db = Database(db_url)
    try:
        assert await AuthFailureStore(db).count() == 0
    finally:
        await db.aclose()


async def test_auth_needs_tls_from_other_networks(
    start_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path / "tls", "localhost")
    smtp_settings = {
        "mode": "submission",
        "cleartext_auth_from": [],  # loopback counts as any other network here
        "tls_cert": cert,
        "tls_key": key,
        "tls_port": 0,
    }
    async with start_gateway(relay_url=upstream.url, smtp=smtp_settings) as gw:
        async with api(gw) as client:
            await _add_user(client, "app")

        def clear_then_tls() -> tuple[bool, int, int, int]:
            context = ssl.create_default_context(cafile=str(cert))
            with smtplib.SMTP(*_address(gw), timeout=20) as smtp:
                smtp.ehlo("client.test")
                offered = smtp.has_extn("auth")
                refused, _ = smtp.docmd("AUTH", _plain("app", PASSWORD))
                smtp.starttls(context=context)
                smtp.ehlo("client.test")
                code, _ = smtp.login("app", PASSWORD)
            assert gw.smtps_address is not None
            with smtplib.SMTP_SSL(*gw.smtps_address, timeout=20, context=context) as smtps:
                smtps.ehlo("client.test")
                implicit, _ = smtps.login("app", PASSWORD)
            return offered, refused, code, implicit

        assert await asyncio.to_thread(clear_then_tls) == (False, 538, 235, 235)


async def test_a_user_sends_through_its_account_and_tenant(
    start_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async with start_gateway(
        relay_url=upstream.url, smtp={"mode": "submission"}, api_token="admin-token-1"
    ) as gw:
        async with api(gw, "admin-token-1") as client:
            await _add_user(client, "app")  # the admin token's tenant: default
            user = (await client.get("/smtp-users/app")).json()
        assert user == {
            "username": "app",
            "senders": [],
            "account": "default",
            "created_at": user["created_at"],
            "updated_at": user["updated_at"],
        }
        code, text = await asyncio.to_thread(_send, _address(gw), _message("any@where.test"))
        assert code == 250, text
        async with api(gw, "admin-token-1") as client:
            [item] = (await client.get("/messages")).json()["items"]
            assert item["account"] == "default"
            assert item["metadata"] == {"smtp_user": "app"}


async def test_the_api_keeps_passwords_write_only_and_names_problems(
    gateway: Gateway,
) -> None:
    async with api(gateway) as client:
        listed = (await client.get("/smtp-users")).json()["smtp_users"]
        assert [u["username"] for u in listed] == ["app"]
        assert "password" not in listed[0] and "password_hash" not in listed[0]
        taken = await client.post("/smtp-users", json={"username": "app", "password": PASSWORD})
        assert taken.status_code == 409
        short = await client.post("/smtp-users", json={"username": "b", "password": "s3cr"})
        assert short.status_code == 422 and "s3cr" not in short.text
        bad = await client.post(
            "/smtp-users", json={"username": "c", "password": PASSWORD, "senders": ["not a domain"]}
        )
        assert bad.status_code == 422
        changed = await client.patch("/smtp-users/app", json={"password": "a-new-password"})
        assert changed.status_code == 200
    with pytest.raises(smtplib.SMTPAuthenticationError):  # the old one no longer works
        await asyncio.to_thread(_send, _address(gateway), _message())
    code, _ = await asyncio.to_thread(
        _send, _address(gateway), _message(), login=("app", "a-new-password")
    )
    assert code == 250
    async with api(gateway) as client:
        assert (await client.delete("/smtp-users/app")).status_code == 204
        assert (await client.get("/smtp-users/app")).status_code == 404
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(
            _send, _address(gateway), _message(), login=("app", "a-new-password")
        )


async def test_a_session_sends_as_its_user_is_now(gateway: Gateway) -> None:
    """A user's senders are checked as they are at each MAIL, not as they were at AUTH;
    a user removed, or whose password changed, cannot send on a session it opened
    before: 530, and AUTH again (which then fails, or takes the new password)."""

    def session(steps: list[tuple[str, str]]) -> list[tuple[int, bytes]]:
        replies = []
        with smtplib.SMTP(*_address(gateway), timeout=20) as smtp:
            smtp.ehlo("client.test")
            smtp.login("app", PASSWORD)
            for step, arg in steps:
                if step == "api":
                    asyncio.run_coroutine_threadsafe(change(arg), loop).result(20)
                    continue
                replies.append(smtp.mail(arg))
                smtp.rset()
            return replies

    async def change(what: str) -> None:
        async with api(gateway) as client:
            if what == "senders":
                reply = await client.patch("/smtp-users/app", json={"senders": ["@other.test"]})
            elif what == "password":
                reply = await client.patch("/smtp-users/app", json={"password": "a-new-one-2"})
            else:
                reply = await client.delete("/smtp-users/app")
            assert reply.status_code in (200, 204), reply.text

    loop = asyncio.get_running_loop()
    first = await asyncio.to_thread(session, [
        ("mail", "app@example.com"), ("api", "senders"),
        ("mail", "app@example.com"), ("mail", "app@other.test"), ("api", "password"),
        ("mail", "app@other.test"), ("mail", "app@other.test"),
    ])  # fmt: skip
    assert [code for code, _ in first] == [250, 553, 250, 530, 530]
    assert first[3][1].startswith(b"5.7.0 Authentication required: app was removed")
    async with api(gateway) as client:  # the user again, with its first password
        assert (await client.delete("/smtp-users/app")).status_code == 204
        await _add_user(client, "app")

    second = await asyncio.to_thread(session, [("api", "delete"), ("mail", "app@example.com")])
    assert [code for code, _ in second] == [530]

    def again() -> tuple[int, bytes]:
        with smtplib.SMTP(*_address(gateway), timeout=20) as smtp:
            smtp.ehlo("client.test")
            smtp.login("app", PASSWORD)
            return smtp.mail("app@example.com")

    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(again)


async def test_plain_may_not_ask_to_act_as_another_user(gateway: Gateway) -> None:
    """RFC 4616 §2: an authorization identity other than the user's own is refused (no
    user here may act as another); its own, or none, is the user."""
    async with api(gateway) as client:
        await _add_user(client, "other")

    def login(authzid: str) -> int:
        blob = base64.b64encode(f"{authzid}\0app\0{PASSWORD}".encode()).decode()
        with smtplib.SMTP(*_address(gateway), timeout=20) as smtp:
            smtp.ehlo("client.test")
            return smtp.docmd("AUTH", "PLAIN " + blob)[0]

    assert await asyncio.to_thread(login, "other") == 535
    assert await asyncio.to_thread(login, "app") == 235
    assert await asyncio.to_thread(login, "") == 235


async def test_the_auth_parameter_of_mail_is_taken_and_dropped(gateway: Gateway) -> None:
    """RFC 4954 §5: a server that offers AUTH parses MAIL's AUTH= and may drop it; a
    malformed value is a syntax error."""

    def mail(parameter: str) -> tuple[int, bytes]:
        with smtplib.SMTP(*_address(gateway), timeout=20) as smtp:
            smtp.ehlo("client.test")
            smtp.login("app", PASSWORD)
            return smtp.docmd("MAIL", f"FROM:<app@example.com> {parameter}")

    assert (await asyncio.to_thread(mail, "AUTH=<>"))[0] == 250
    assert (await asyncio.to_thread(mail, "AUTH=app+40example.com"))[0] == 250
    assert (await asyncio.to_thread(mail, "AUTH=a+b"))[0] == 501  # + must spell a hex pair
    assert (await asyncio.to_thread(mail, "AUTH"))[0] == 501


async def test_a_password_with_nul_is_refused(gateway: Gateway) -> None:
    """AUTH PLAIN separates its fields with NUL: such a password could never log in."""
    secret = "abc\0defgh123"
    async with api(gateway) as client:
        made = await client.post("/smtp-users", json={"username": "nul", "password": secret})
        changed = await client.patch("/smtp-users/app", json={"password": secret})
    for reply in (made, changed):
        assert reply.status_code == 422 and "NUL" in reply.text
        assert "defgh123" not in reply.text


async def test_sessions_on_postgresql_open_connections_in_auth_and_mail(
    upstream: Upstream, postgres_url: str
) -> None:
    """On PostgreSQL, AUTH and MAIL read the users through asyncpg, whose connect has a
    time-out that needs a current task: with no idle connection in the pool (none yet,
    or all busy) they open one. Every session of many at once gets its 250."""
    database = await fresh_postgres_database(postgres_url, "mailgate_submission")
    settings = fast_settings(database, relay_url=upstream.url, smtp={"mode": "submission"})
    async with Gateway(settings, mode=Mode.SERVE) as gw:
        async with api(gw) as client:
            await _add_user(client, "app", senders=["@example.com"])
        assert gw._db is not None and gw._db.engine is not None
        emptied = gw._db.engine.sync_engine.pool
        await gw._db.engine.dispose()  # the first AUTH connects, and MAIL after it
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(16) as clients:  # not the server's threads (scrypt runs there)
            sent = await asyncio.gather(
                *(loop.run_in_executor(clients, _send, _address(gw), _message()) for _ in range(16))
            )
    # A connection a background task had out at the dispose went back to the emptied
    # pool, which nothing closes: closed here, not left to the garbage collector (an
    # "unclosed connection" ResourceWarning in whichever test runs then)
    await greenlet_spawn(emptied.dispose)
    assert [code for code, _ in sent] == [250] * 16


@pytest.mark.parametrize("rcpt", ["a", "Postmaster", "a.@example.org", "a@-b.example"])
async def test_a_recipient_rest_would_refuse_is_refused_at_rcpt(
    gateway: Gateway, upstream: Upstream, rcpt: str
) -> None:
    """Relayed as given, ``<a>`` or ``<Postmaster>`` would be completed by the upstream
    with a domain of its own; each is refused at RCPT (553 5.1.3), and the transaction
    goes on to the recipients that are addresses."""

    def session() -> list[tuple[int, bytes]]:
        with smtplib.SMTP(*_address(gateway), timeout=20) as smtp:
            smtp.ehlo("client.test")
            smtp.login("app", PASSWORD)
            smtp.mail("app@example.com")
            return [smtp.rcpt(rcpt), smtp.rcpt("to@example.org"), smtp.data(_message())]

    refused, accepted, data = await asyncio.to_thread(session)
    assert (refused[0], refused[1][:5]) == (553, b"5.1.3"), refused
    assert (accepted[0], data[0]) == (250, 250)
    async with api(gateway) as client:
        [queued] = (await client.get("/messages")).json()["items"]
        await wait_for_state(client, queued["id"], "sent")
    assert [r.rcpt_tos for r in upstream.received] == [["to@example.org"]]
