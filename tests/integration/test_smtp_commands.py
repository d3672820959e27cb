"""The capture server's answers to every command a client may send (issue 9): unknown
and malformed commands get 500/501 and the session goes on, VRFY says 252, HELP, RSET,
NOOP and QUIT, pipelined commands in one write."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from pathlib import Path

import pytest

from mailgate.app import Mode
from mailgate.ingest import smtp as smtp_module
from mailgate.ingest.chunking import HELD_WHOLE
from mailgate.ingest.smtp import bare_line_endings
from tests.integration.conftest import GatewayFactory, api


def _converse(address: tuple[str, int], chunks: list[bytes]) -> list[str]:
    """Write each chunk raw and read as many replies as it has lines: the replies' codes
    and texts, the greeting first."""
    with socket.create_connection(address, timeout=10) as sock:
        reader = sock.makefile("rb")

        def reply() -> str:
            lines = [reader.readline().decode()]
            while lines[-1][3:4] == "-":
                lines.append(reader.readline().decode())
            return lines[-1].rstrip("\r\n")

        replies = [reply()]
        for chunk in chunks:
            sock.sendall(chunk)
            expected = 1 if chunk.startswith(b"Subject") else chunk.count(b"\r\n")
            replies += [reply() for _ in range(expected)]
        return replies


async def test_every_command_gets_its_answer_and_the_session_goes_on(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_converse, gw.smtp_address, [
            b"EHLO client.test\r\n",
            b"FROBNICATE\r\n",  # unknown
            b"MAIL FROM:<a@example.com\r\n",  # malformed: unclosed
            b"MAIL\r\n",  # malformed: no argument
            b"RCPT TO:<you@example.com>\r\n",  # out of order: no MAIL yet
            b"RCPT TO:you@example.com>\r\n",  # malformed, and still out of order
            b"VRFY postmaster\r\n",
            b"HELP\r\n",
            b"NOOP\r\n",
            b"MAIL FROM:<a@example.com>\r\nRSET\r\n",  # pipelined, then reset
            # pipelined transaction (RFC 2920): one write, three replies
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<you@example.com>\r\nDATA\r\n",
            b"Subject: pipelined\r\n\r\nbody\r\n.\r\n",
            b"QUIT\r\n",
        ])  # fmt: skip
        items = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{items[0]['id']}")).json()
    codes = [r[:3] for r in replies]
    assert codes == ["220", "250", "500", "501", "501", "503", "501", "252", "250", "250", "250",
                     "250", "250", "250", "354", "250", "221"], replies  # fmt: skip
    assert [m["subject"] for m in items] == ["pipelined"]
    # capture mode records the protocol trouble on the message that followed it
    [problem] = event["message"]["problems"]
    assert problem.startswith("the session had 5 command(s) refused before this message")
    assert 'command "FROBNICATE" not recognized' in problem and "RCPT TO:<address>" in problem


async def test_a_quoted_local_part_may_hold_spaces(start_gateway: GatewayFactory) -> None:
    """RFC 5321 §4.1.2: ``Quoted-string`` local parts, spaces and escapes included."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_converse, gw.smtp_address, [
            b"EHLO client.test\r\n",
            b'MAIL FROM:<"john smith"@example.com> SIZE=100\r\n',
            b'RCPT TO:<"a \\"b\\" c"@example.org>\r\n',
            b'RCPT TO:<"a b@example.org>\r\n',  # the quote never closes: no closing bracket
            b"DATA\r\n",
            b"Subject: quoted\r\n\r\nbody\r\n.\r\n",
        ])  # fmt: skip
        [item] = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{item['id']}")).json()
    assert [r[:3] for r in replies] == ["220", "250", "250", "250", "501", "354", "250"], replies
    assert event["envelope"]["from"] == '"john smith"@example.com'
    assert event["envelope"]["to"] == ['"a \\"b\\" c"@example.org']


async def test_parameters_follow_the_path_after_white_space_whatever_the_path(
    start_gateway: GatewayFactory,
) -> None:
    """RFC 5321 §4.1.1.2 ``[SP Mail-parameters]``: a tab is taken as the space (as
    Postfix does), and a parameter stuck to the path is a 501, for a plain path, a quoted
    local part and the null path alike (the quoted one took both the other way round)."""
    async with start_gateway(Mode.DEV) as gw:
        assert gw.smtp_address is not None
        paths = [b"<a@example.com>", b'<"a b"@example.com>', b"<>"]
        chunks = [b"EHLO client.test\r\n"]
        for path in paths:
            chunks += [b"MAIL FROM:" + path + b"\tSIZE=10\r\nRSET\r\n"]
            chunks += [b"MAIL FROM:" + path + b"SIZE=10\r\n"]
        chunks += [b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>NOTIFY=NEVER\r\n"]
        replies = await asyncio.to_thread(_converse, gw.smtp_address, chunks)
    assert [r[:3] for r in replies] == [
        "220", "250", "250", "250", "501", "250", "250", "501", "250", "250", "501",
        "250", "501",
    ], replies  # fmt: skip


async def test_a_size_in_digits_that_are_not_ascii_is_a_syntax_error(
    start_gateway: GatewayFactory,
) -> None:
    """RFC 1870 §3: ``size-value ::= 1*20DIGIT``, ASCII digits. A superscript two passed
    ``str.isdigit`` and broke ``int()``: the client heard 451 "local error" and the log a
    traceback; Arabic-Indic digits were read as a number. Both are a 501 now."""
    async with start_gateway(Mode.DEV) as gw:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_converse, gw.smtp_address, [
            b"EHLO client.test\r\n",
            "MAIL FROM:<a@example.com> SIZE=\u00b2\r\n".encode(),
            "MAIL FROM:<a@example.com> SIZE=\u0661\u0662\r\n".encode(),
            b"MAIL FROM:<a@example.com> SIZE=12\r\n",
        ])  # fmt: skip
    assert [r[:3] for r in replies] == ["220", "250", "501", "501", "250"], replies


async def test_a_path_with_a_control_character_or_bytes_not_utf8_is_refused(
    start_gateway: GatewayFactory,
) -> None:
    """No path holds a control character or an octet that is not UTF-8 (RFC 5321 §4.1.2,
    RFC 6531): each is refused ``553`` and told on the message that follows, never stored
    as another address (the RFC 5322 parser drops a vertical tab and makes ``\\xff`` a
    U+FFFD)."""
    async with start_gateway(Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_converse, gw.smtp_address, [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<a@exa\x0bmple.com>\r\n",
            b"MAIL FROM:<\xc3\xbc@example.com>\r\n",  # UTF-8, not declared (RFC 6531)
            b"MAIL FROM:<a@example.com> SMTPUTF8\r\n",
            b"RCPT TO:<b\xff@example.com>\r\n",
            b'RCPT TO:<"b\x01c"@example.com>\r\n',
            b"RCPT TO:<ok@exam\x7fple.com>\r\n",
            b"RCPT TO:<\xc3\xbc@example.com>\r\n",  # UTF-8 is fine, declared
            b"DATA\r\n",
            b"Subject: controls\r\n\r\nbody\r\n.\r\n",
        ])  # fmt: skip
        [item] = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{item['id']}")).json()
    assert [r[:3] for r in replies] == [
        "220", "250", "553", "553", "250", "553", "553", "553", "250", "354", "250"
    ], replies  # fmt: skip
    assert replies[3] == "553 5.6.7 Must declare SMTPUTF8 to send Unicode address"
    assert event["envelope"]["from"] == "a@example.com"
    assert event["envelope"]["to"] == ["\u00fc@example.com"]
    [problem] = event["message"]["problems"]
    assert problem.startswith("the session had 5 command(s) refused before this message")
    assert "553 5.1.3" in problem


async def test_a_bare_path_that_breaks_the_address_parser_is_refused_553(
    start_gateway: GatewayFactory,
) -> None:
    """A path without brackets goes to the standard library's RFC 5322 parser, which
    raises AttributeError or UnboundLocalError on some (a domain literal left open): the
    command crashed, the client heard 451 "local error" and the log a traceback. They are
    malformed addresses: 553, and VRFY's 502."""
    async with start_gateway(Mode.DEV) as gw:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_converse, gw.smtp_address, [
            b"EHLO client.test\r\n",
            b"MAIL FROM:'@\t[\"\r\n",
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:a@[\"\r\n",
            b"RCPT TO:'``@[\t\r\n",
            b"VRFY a@[\"\r\n",
        ])  # fmt: skip
    assert [r[:3] for r in replies] == ["220", "250", "553", "250", "553", "553", "502"], replies


async def test_a_unicode_recipient_needs_smtputf8_declared(start_gateway: GatewayFactory) -> None:
    """RFC 6531 §3.4: without MAIL's SMTPUTF8 the transaction is ASCII; a server that took
    a Unicode address anyway passed the client's mistake on to the next hop."""
    async with start_gateway(Mode.DEV) as gw:
        assert gw.smtp_address is not None
        replies = await asyncio.to_thread(_converse, gw.smtp_address, [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<z\xc3\xb6e@example.com>\r\n",
            b"RCPT TO:<zoe@example.com>\r\n",
        ])  # fmt: skip
    assert replies[3] == "553 5.6.7 Must declare SMTPUTF8 to send Unicode address"
    assert replies[4].startswith("250")


async def test_lines_that_are_no_command_are_answered_until_the_twentieth(
    start_gateway: GatewayFactory,
) -> None:
    """A client that speaks something else (an HTTP request: a verb SMTP does not know,
    then header lines and an empty line, which are no command at all) is sent away with
    421 at the 20th such line (as Postfix's ``smtpd_hard_error_limit``); until then each
    is a 500, and the session goes on."""
    http = [b"GET / HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Accept: */*\r\n", b"\r\n"]
    async with start_gateway(Mode.DEV) as gw:
        assert gw.smtp_address is not None
        commands = http * 4 + [b"NOOP\r\n"] + http[:3] + [b"FOO\r\n"]
        replies = await asyncio.to_thread(_converse, gw.smtp_address, commands)
    unknown, bad = '500 Error: command "GET" not recognized', "500 Error: bad syntax"
    assert replies[1:17] == [unknown, bad, bad, bad] * 4
    assert replies[17:] == ["250 OK", unknown, bad, bad,
                            "421 4.7.0 Too many unrecognized commands, closing"]  # fmt: skip


@pytest.mark.parametrize("mode", ["memory", "tempfile"])  # tempfile: written as it comes
async def test_a_big_message_with_bare_lf_lines_is_kept_and_flagged(
    start_gateway: GatewayFactory, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``smtplib`` sends bytes as they are: a message written with ``\\n`` arrives with
    bare LFs. Its lines are 77 octets, not one line as long as the message: kept, and
    its line endings named in ``problems``, counted as it came: never in one pass over
    the whole message on the event loop."""
    counted = bare_line_endings

    def small_only(raw: bytes) -> tuple[str, ...]:
        assert len(raw) <= HELD_WHOLE, f"{len(raw)} octets counted in one pass"
        return counted(raw)

    monkeypatch.setattr(smtp_module, "bare_line_endings", small_only)
    body = b"".join(b"%076d\n" % n for n in range(20_000))  # 1.5 MB
    raw = b"Subject: bare lf\n\n" + body
    storage = {"mode": mode, "temp_dir": str(tmp_path)}
    smtp = {"max_message_size": 0, "attachment_storage": storage}
    async with start_gateway(Mode.DEV, smtp=smtp) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        address = gw.smtp_address

        def send() -> object:
            with smtplib.SMTP(*address, timeout=30) as smtp:
                return smtp.sendmail("a@example.com", ["b@example.com"], raw)

        assert await asyncio.to_thread(send) == {}
        [item] = (await client.get("/inbox")).json()["items"]
        event = (await client.get(f"/inbox/{item['id']}")).json()
    assert item["subject"] == "bare lf"
    [problem] = event["message"]["problems"]
    assert problem.startswith("DATA has 20002 bare LF line ending(s)")


@pytest.mark.parametrize("configured", [0, 2_000_000_000])  # no limit; past the store's
async def test_no_message_larger_than_the_store_keeps_is_taken(
    start_gateway: GatewayFactory, configured: int
) -> None:
    """A message past 10^9 octets cannot be stored (SQLite's limit; PostgreSQL's bytea
    ends at 1 GiB): it got 451 after its DATA, and the client retried for ever. SIZE
    announces the store's limit and a larger message is refused for good (552)."""
    async with start_gateway(Mode.DEV, smtp={"max_message_size": configured}) as gw:
        assert gw.smtp_address is not None
        address = gw.smtp_address
        replies = await asyncio.to_thread(_converse, address, [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<a@example.com> SIZE=999000001\r\n",
            b"MAIL FROM:<a@example.com> SIZE=999000000\r\n",
        ])  # fmt: skip

        def size_line() -> str:
            with smtplib.SMTP(*address, timeout=10) as smtp:
                smtp.ehlo("client.test")
                return smtp.esmtp_features["size"]

        announced = await asyncio.to_thread(size_line)
    assert announced == "999000000"
    assert [r[:3] for r in replies[2:]] == ["552", "250"], replies
