"""Downloads of a big captured message (issue 9): its attachments, its parts (Mailpit's
part downloads, the UI's inline images) and its source go out through a file, copied
from the store a block at a time, never whole in memory, on SQLite and PostgreSQL, from
the REST API, the UI and Mailpit's API alike."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import os
import re
import smtplib
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailgate.app import Gateway, Mode
from mailgate.mime.parts import mime_parts
from mailgate.ui import inbox_frame, inbox_pages
from tests.integration.conftest import api, engine_url, fast_settings, send_raw
from tests.integration.test_mailpit_api import html_part

BIG = os.urandom(3 * 1024 * 1024)  # past the 1 MiB above which downloads use a file


def _message(attachment: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "big"
    msg.set_content("see attached")
    msg.add_attachment(b"small one", maintype="text", subtype="plain", filename="a.txt")
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                       filename="big.bin")  # fmt: skip
    return msg.as_bytes(policy=policy.SMTP)


def _inline_message(image: bytes, spacer: bytes = b"GIF89a spacer") -> bytes:
    """Text and HTML, the HTML's images related to it (Mailpit's ``Inline``): ``image``
    with a file name (part 1.2.2), ``spacer`` with a Content-ID alone and no disposition
    (1.2.3, not an attachment); then an attachment (2)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "inline"
    msg.set_content("see the logo")
    msg.add_alternative(
        '<p>logo <img src="cid:logo"> <img src="cid:spacer"> and again'
        ' <img src="cid:logo"> <img src="cid:nowhere"></p>',
        subtype="html",
    )
    html = html_part(msg)
    html.add_related(
        image,
        maintype="image",
        subtype="png",
        cid="<logo>",
        disposition="inline",
        filename="logo.png",
    )
    html.add_related(spacer, maintype="image", subtype="gif", cid="<spacer>")
    msg.add_attachment(b"small one", maintype="text", subtype="plain", filename="a.txt")
    return msg.as_bytes(policy=policy.SMTP)  # fmt: skip


def _data_uris(html: str) -> list[tuple[str, bytes]]:
    """The ``data:`` URIs in ``html``: their media types and decoded bytes."""
    found = re.findall(r"data:([^;]+);base64,([A-Za-z0-9+/=]*)", html)
    return [(media_type, base64.b64decode(data)) for media_type, data in found]


def _send(address: tuple[str, int], raw: bytes) -> None:
    with smtplib.SMTP(*address, timeout=60) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], raw)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, db_url: str) -> str:
    return await engine_url(request, db_url, "mailgate_downloads")


async def test_a_big_message_s_attachments_and_source_download_exactly(db: str) -> None:
    raw = _message(BIG)
    async with Gateway(fast_settings(db), mode=Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        await asyncio.to_thread(_send, gw.smtp_address, raw)
        [item] = (await client.get("/inbox")).json()["items"]
        mid = item["id"]
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as web:
            for path in (f"/api/v1/inbox/{mid}/attachments/1", f"/inbox/{mid}/attachments/1"):
                got = await web.get(path)
                assert got.status_code == 200 and got.content == BIG, path
                assert got.headers["content-length"] == str(len(BIG))
                assert got.headers["content-disposition"].startswith("attachment")
                assert got.headers["x-content-type-options"] == "nosniff"
            small = await web.get(f"/api/v1/inbox/{mid}/attachments/0")
            assert small.content == b"small one"
            missing = await web.get(f"/api/v1/inbox/{mid}/attachments/2")
            assert missing.status_code == 404
            for path in (
                f"/api/v1/inbox/{mid}/raw",
                f"/inbox/{mid}/raw",
                f"/mailpit/api/v1/message/{mid}/raw",
            ):
                got = await web.get(path)
                assert got.status_code == 200 and got.content == raw, path
            assert (await web.get("/api/v1/inbox/00000000/raw")).status_code == 404


async def test_a_big_attachment_is_never_whole_in_memory(db: str) -> None:
    """Four downloads of a 50 MiB attachment at once cost 500 MiB: each parsed the whole
    message in memory. Now the message is copied into a file and parsed from there, the
    attachment decoded into a file of its own, read a block at a time."""
    size = 48 * 1024 * 1024
    settings = fast_settings(db, smtp={"max_message_size": 0})
    async with Gateway(settings, mode=Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        await asyncio.to_thread(_send, gw.smtp_address, _message(os.urandom(size)))
        [item] = (await client.get("/inbox")).json()["items"]
        warm_up = await gw.inbox.attachment_download(item["id"], 0, "default")
        assert warm_up.file is not None
        warm_up.file.close()
        with _AnonPeak() as peak:
            download = await gw.inbox.attachment_download(item["id"], 1, "default")
            assert download.file is not None and download.size == size
            with download.file as file:
                read = 0
                while block := file.read(1 << 20):
                    read += len(block)
    assert read == size
    assert peak.grown < size // 4, f"anonymous memory grew {peak.grown / 2**20:.1f} MiB"


class _AnonPeak:
    """The most the process's anonymous memory (``RssAnon``: not the pages of files it
    maps, such as the message parsed from its file) grew while in the block, sampled
    every 5 ms in a thread."""

    def __enter__(self) -> _AnonPeak:
        self.start = self.peak = _anon()
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _anon())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()
        self.peak = max(self.peak, _anon())
        self.grown = self.peak - self.start


def _anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


async def test_a_big_message_s_parts_download_exactly_numbered_as_a_small_one_s(db: str) -> None:
    """Mailpit's part and thumbnail downloads and the UI's inline images of a big message
    come from files now: the bytes, the part ids, the headers and the 404s are those of
    the parse in memory (what a small message still gets)."""
    image = os.urandom(3 * 1024 * 1024)
    raw = _inline_message(image)
    expected = mime_parts(raw)  # the numbering and the contents of the in-memory parse
    async with Gateway(fast_settings(db), mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, raw)
        await send_raw(gw, _inline_message(b"small logo"))
        small, big = [m["id"] for m in (await client.get("/inbox")).json()["items"]]
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as web:
            listed = {}
            for mid in (small, big):
                view = (await web.get(f"/mailpit/api/v1/message/{mid}")).json()
                listed[mid] = [p["PartID"] for p in (*view["Inline"], *view["Attachments"])]
            assert listed[big] == listed[small] == ["1.2.2", "1.2.3", "2"]
            assert [p.part_id for p in expected.each()] == listed[big]
            for part in expected.each():
                got = await web.get(f"/mailpit/api/v1/message/{big}/part/{part.part_id}")
                assert got.status_code == 200 and got.content == part.content, part.part_id
                assert got.headers["content-length"] == str(len(part.content))
                assert got.headers["x-content-type-options"] == "nosniff"
                assert got.headers["content-security-policy"] == "sandbox; default-src 'none'"
            logo = await web.get(f"/mailpit/api/v1/message/{big}/part/1.2.2")
            assert logo.content == image and logo.headers["content-type"] == "image/png"
            assert logo.headers["content-disposition"] == 'filename="logo.png"'
            text = await web.get(f"/mailpit/api/v1/message/{big}/part/2")
            assert text.headers["content-type"] == "text/plain; charset=utf-8"
            for part_id, content in (("1.2.2", image), ("1.2.3", b"GIF89a spacer")):
                thumb = await web.get(f"/mailpit/api/v1/message/{big}/part/{part_id}/thumb")
                assert (thumb.status_code, thumb.content) == (200, content), part_id
                assert thumb.headers["content-security-policy"] == "sandbox"
            not_image = await web.get(f"/mailpit/api/v1/message/{big}/part/2/thumb")
            assert not_image.status_code == 400
            for part_id in ("9", "1.1", "1.2", "0", "1.2.2.1"):  # none, or not listed
                for mid in (small, big):
                    for suffix in ("", "/thumb"):
                        path = f"/mailpit/api/v1/message/{mid}/part/{part_id}{suffix}"
                        missing = await web.get(path)
                        assert (missing.status_code, missing.text) == (404, "404 page not found")
            frame = await web.get(f"/inbox/{big}/html")
            assert frame.status_code == 200
            assert frame.headers["content-type"] == "text/html; charset=utf-8"
            assert frame.headers["content-security-policy"].startswith("sandbox;")
            assert frame.headers["x-content-type-options"] == "nosniff"
            assert _data_uris(frame.text) == [
                ("image/png", image), ("image/gif", b"GIF89a spacer"), ("image/png", image)
            ]  # fmt: skip
            assert '<img src="cid:nowhere">' in frame.text
            small_frame = await web.get(f"/inbox/{small}/html")
            assert _data_uris(small_frame.text) == [
                ("image/png", b"small logo"), ("image/gif", b"GIF89a spacer"),
                ("image/png", b"small logo"),
            ]  # fmt: skip
            streamed = frame.headers.keys() - {"transfer-encoding"}  # (no length ahead)
            assert streamed == small_frame.headers.keys() - {"content-length"}
            assert small_frame.headers["content-type"] == frame.headers["content-type"]


def _related(html: str, cids: int) -> bytes:
    """``html`` with ``cids`` one-byte images related to it, ``cid:i00`` to ``cid:i99``."""
    images = b"".join(
        b"--r\r\nContent-Type: image/gif\r\nContent-ID: <i%02d>\r\n\r\nG\r\n" % n
        for n in range(cids)
    )
    return (
        b"From: a@example.com\r\nSubject: refs\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\n"
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(html.encode()).replace(b"\n", b"\r\n")
        + images
        + b"--r--\r\n"
    )


async def test_a_big_message_s_frame_with_many_references_comes_in_blocks(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block of a big message's frame is read in Starlette's thread pool: each
    ``cid:`` reference was three blocks of its own, and 200,000 of them took 91 s. Now
    the pieces are joined into blocks of 768 KiB."""
    sizes: list[int] = []
    made = inbox_frame.inline_images

    def counted(*args: Any) -> Iterator[bytes]:
        for block in made(*args):
            sizes.append(len(block))
            yield block

    monkeypatch.setattr(inbox_pages, "inline_images", counted)
    html = "".join(f'<img src="cid:i{n % 50:02}">' for n in range(60_000))
    raw = _related(html, 50)
    assert len(raw) > 1024 * 1024  # a big message: its images come from files
    async with Gateway(fast_settings(db_url), mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, raw)
        [item] = (await client.get("/inbox")).json()["items"]
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as web:
            frame = await web.get(f"/inbox/{item['id']}/html")
    assert frame.status_code == 200 and frame.text.count("data:image/gif;base64,Rw==") == 60_000
    assert sum(sizes) == len(frame.content) and len(sizes) > 1
    assert all(size >= 768 << 10 for size in sizes[:-1])  # one piece a block: 180,000 blocks


async def test_a_big_part_is_never_whole_in_memory(db: str) -> None:
    """Mailpit's download of a 48 MiB inline image, and the UI's page inlining it, read
    the whole message and decoded every part in memory (one reader at a time). Now the
    message is copied into a file and parsed from there, the image decoded into a file
    of its own and sent a block at a time (the UI's in base64, a block at a time)."""
    size = 48 * 1024 * 1024
    image = os.urandom(size)
    settings = fast_settings(db, smtp={"max_message_size": 0})
    async with Gateway(settings, mode=Mode.DEV) as gw, api(gw) as client:
        assert gw.smtp_address is not None
        await asyncio.to_thread(_send, gw.smtp_address, _inline_message(image))
        [item] = (await client.get("/inbox")).json()["items"]
        mid = item["id"]
        frame = _frame_digest((await gw.inbox.get(mid, "default")).html or "", image)
        paths = {
            f"/mailpit/api/v1/message/{mid}/part/1.2.2": (hashlib.sha256(image).hexdigest(), size),
            f"/inbox/{mid}/html": frame,
        }
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=60) as web:
            await _digest(web, f"/mailpit/api/v1/message/{mid}/part/1.2.3")  # warm-up
            for path, expected in paths.items():
                with _AnonPeak() as peak:
                    got = await _digest(web, path)
                assert got == expected, path
                assert peak.grown < size // 4, f"{path}: grew {peak.grown / 2**20:.1f} MiB"


def _frame_digest(html: str, image: bytes) -> tuple[str, int]:
    """The SHA-256 and the length of the UI's page of :func:`_inline_message`: ``html``
    with its ``cid:`` images as ``data:`` URIs (as they were inlined in memory)."""
    uris = {
        "cid:logo": b"data:image/png;base64," + base64.b64encode(image),
        "cid:spacer": b"data:image/gif;base64," + base64.b64encode(b"GIF89a spacer"),
    }
    sha, length = hashlib.sha256(), 0
    for piece in re.split(r"(cid:logo|cid:spacer)", html):
        encoded = uris.get(piece) or piece.encode()
        sha.update(encoded)
        length += len(encoded)
    return sha.hexdigest(), length


async def _digest(web: httpx.AsyncClient, path: str) -> tuple[str, int]:
    """The SHA-256 and the length of what ``path`` answers, read as it comes."""
    sha, length = hashlib.sha256(), 0
    async with web.stream("GET", path) as response:
        assert response.status_code == 200, path
        async for block in response.aiter_bytes():
            sha.update(block)
            length += len(block)
    return sha.hexdigest(), length


async def test_readers_of_a_big_message_s_parts_never_decode_it_in_memory(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part of a big message (Mailpit's part download, the UI's inline images) was
    read by parsing the whole message in memory, for one reader at a time. Readers now
    go at once, each decoding the part it wants from a file; a small message's parts
    are still decoded in memory."""
    from mailgate.inbox import service

    in_memory = 0

    def counted(raw: bytes, **options: Any) -> Any:
        nonlocal in_memory
        in_memory += options.get("contents", True)
        return mime_parts(raw, **options)

    monkeypatch.setattr(service, "mime_parts", counted)
    image = os.urandom(3 * 1024 * 1024)
    async with Gateway(fast_settings(db_url), mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, _inline_message(image))
        await send_raw(gw, _inline_message(b"small logo"))
        small, big = [m["id"] for m in (await client.get("/inbox")).json()["items"]]
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as web:
            paths = [f"/mailpit/api/v1/message/{big}/part/1.2.2"] * 3
            paths += [f"/mailpit/api/v1/message/{big}/part/1.2.2/thumb", f"/inbox/{big}/html"]
            got = await asyncio.gather(*(web.get(path) for path in paths))
            assert [g.content == image for g in got[:4]] == [True] * 4
            assert _data_uris(got[4].text)[0] == ("image/png", image)
            assert in_memory == 0
            await web.get(f"/mailpit/api/v1/message/{small}/part/1.2.2")
            await web.get(f"/inbox/{small}/html")
            assert in_memory == 2


async def test_mailpit_s_view_of_a_big_message_never_holds_it(db_url: str) -> None:
    """Mailpit's message view lists every part with its size and checksums: it parsed
    the whole message in memory (+128 MiB for 68 MiB). The list is now made from a copy
    in a file, each part decoded into its digests."""
    size = 48 * 1024 * 1024
    attachment = os.urandom(size)
    settings = fast_settings(db_url, smtp={"max_message_size": 0})
    async with Gateway(settings, mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, _message(attachment))
        [item] = (await client.get("/inbox")).json()["items"]
        await gw.inbox.parts(item["id"], "default")  # warm-up
        with _AnonPeak() as peak:
            listed = await gw.inbox.parts(item["id"], "default")
        async with httpx.AsyncClient(base_url=f"{gw.http_url}/mailpit", timeout=30) as mailpit:
            view = (await mailpit.get(f"/api/v1/message/{item['id']}")).json()
    big = listed.find("3")
    assert big is not None and big.digests is not None and big.content == b""
    assert big.digests[0] == size and big.digests[3] == hashlib.sha256(attachment).hexdigest()
    [_, shown] = view["Attachments"]
    assert (shown["Size"], shown["Checksums"]["SHA256"]) == (size, big.digests[3])
    assert peak.grown < size // 4, f"anonymous memory grew {peak.grown / 2**20:.1f} MiB"


async def test_an_attachment_downloads_beside_one_that_does_not_decode(db_url: str) -> None:
    """A body that does not decode after all is written again from its start (seek and
    truncate): the attachments a download does not want went to /dev/null, which cannot
    be truncated, and the one it wanted came back 500."""
    good = base64.encodebytes(BIG)
    raw = (
        b"From: a@example.com\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
        b'Content-Type: application/octet-stream; name="cut.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nQUJDR\r\n--b\r\n"
        b'Content-Type: application/octet-stream; name="big.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + good.replace(b"\n", b"\r\n") + b"--b--\r\n"
    )
    async with Gateway(fast_settings(db_url), mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, raw)
        [item] = (await client.get("/inbox")).json()["items"]
        small = await client.get(f"/inbox/{item['id']}/attachments/0")
        got = await client.get(f"/inbox/{item['id']}/attachments/1")
    assert small.status_code == 200
    assert got.status_code == 200 and got.content == BIG


async def test_a_download_cut_off_by_its_client_closes_its_file(db_url: str) -> None:
    """Starlette stops a stream whose client is gone without closing its iterator: the
    file (its name already gone, its disk space not) stayed open until the garbage
    collector came by. It is closed when the response ends."""
    async with Gateway(fast_settings(db_url), mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, _message(BIG))
        [item] = (await client.get("/inbox")).json()["items"]
        host, port = gw.http_url.removeprefix("http://").rsplit(":", 1)
        gc.disable()  # as a busy server's collector may not come by for a while
        try:
            before = _deleted_files()
            for path in (f"/api/v1/inbox/{item['id']}/raw", f"/inbox/{item['id']}/attachments/1"):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                await reader.readexactly(256 * 1024)  # the headers and a little of the body
                writer.transport.abort()
            for _ in range(100):
                if _deleted_files() <= before:
                    break
                await asyncio.sleep(0.05)
            assert _deleted_files() <= before
        finally:
            gc.enable()


def _deleted_files() -> int:
    """Files this process holds open whose names are gone."""
    deleted = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            deleted += os.readlink(fd).endswith(" (deleted)")
    return deleted


async def test_big_downloads_copy_two_at_a_time(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each copy of a big message holds one of the store's reading connections while it
    runs; sixteen at once kept the inbox's lists waiting for one. Two copy at a time."""
    from mailgate.store.inbox import InboxStore

    copy = InboxStore.copy_raw
    running, most = 0, 0

    async def counted(self: InboxStore, capture_id: str, tenant: str, into: Any) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.1)
            await copy(self, capture_id, tenant, into)
        finally:
            running -= 1

    monkeypatch.setattr(InboxStore, "copy_raw", counted)
    async with Gateway(fast_settings(db_url), mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, _message(BIG))
        [item] = (await client.get("/inbox")).json()["items"]
        paths = [
            f"/inbox/{item['id']}/attachments/1",
            f"/inbox/{item['id']}/raw",
            f"/mailpit/api/v1/message/{item['id']}/part/3",
        ] * 3
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as web:
            got = await asyncio.gather(*(web.get(path) for path in paths))
    assert [g.status_code for g in got] == [200] * 9 and got[0].content == BIG
    assert got[2].content == BIG
    assert most == 2


async def test_header_views_read_the_header_block_only_or_all_when_it_is_longer(
    db_url: str,
) -> None:
    """Mailpit's /headers and the UI's headers tab read the whole message for its fields;
    now its first 256 KiB, or all of it when the header block goes on past them."""
    settings = fast_settings(db_url, smtp={"max_message_size": 0})
    long_header = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 200) for i in range(1500))
    async with Gateway(settings, mode=Mode.DEV) as gw, api(gw) as client:
        await send_raw(gw, _message(BIG))
        await send_raw(gw, long_header + b"X-Last: here\r\n" + _message(b"small"))
        items = (await client.get("/inbox")).json()["items"]
        long_id, big_id = items[0]["id"], items[1]["id"]
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=30) as web:
            big = (await web.get(f"/mailpit/api/v1/message/{big_id}/headers")).json()
            assert big["Subject"] == ["big"] and "Content-Type" in big
            assert "see attached" not in str(big)  # the body is no header
            long = (await web.get(f"/mailpit/api/v1/message/{long_id}/headers")).json()
            assert long["X-Last"] == ["here"] and long["Subject"] == ["big"]
            tab = await web.get(f"/inbox/{long_id}?tab=headers")
            assert tab.status_code == 200 and "X-Last" in tab.text
            source = await web.get(f"/inbox/{big_id}?tab=raw")
            assert source.status_code == 200 and "Subject: big" in source.text
