"""URL and path attachments resolved at send time, against a real HTTP(S) server and files.

The server listens on 127.0.0.1, which the SSRF guard refuses by default; tests that
need to reach it allow it the way an operator would (``allow_private_networks`` or
``allowed_hosts``). Names such as ``files.test`` resolve through a resolver function
given to the guard, so no test depends on /etc/hosts or outside DNS.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailgate.deliver.attachments import AttachmentUnavailable
from mailgate.deliver.content import SendTimeContent
from mailgate.deliver.ssrf import system_resolver
from mailgate.model import Attachment, Message
from mailgate.settings import AttachmentSettings
from tests.builders import make_message, submitted
from tests.content_peers import FileServer, body, tls_pair
from tests.integration.conftest import GatewayFactory, api, wait_for_state
from tests.peers import Upstream

KB = 1024


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


async def names(host: str, port: int) -> Sequence[str]:
    """``*.test`` names for the local server; ``metadata.test`` for the cloud's metadata."""
    table = {"files.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]}
    return table.get(host) or await system_resolver(host, port)


async def resolve(message: Message, **settings: Any) -> Message:
    async with SendTimeContent(AttachmentSettings(**settings), resolver=names) as content:
        return (await content(message)).message


def with_url(*urls: str) -> Message:
    files = tuple(
        Attachment(f"f{i}.bin", "application/octet-stream", b"", url=u) for i, u in enumerate(urls)
    )
    return make_message(attachments=files)


async def refused(message: Message, **settings: Any) -> AttachmentUnavailable:
    with pytest.raises(AttachmentUnavailable) as caught:
        await resolve(message, **settings)
    return caught.value


# --- where a URL may lead ----------------------------------------------------------------


async def test_a_loopback_url_is_refused_by_default(server: FileServer) -> None:
    error = await refused(with_url(server.url("/file/10")))
    assert "127.0.0.1 is a loopback address" in str(error) and not error.temporary
    assert server.hosts == []  # never connected


async def test_a_loopback_url_is_fetched_when_private_networks_are_allowed(
    server: FileServer,
) -> None:
    message = await resolve(with_url(server.url("/file/3000")), allow_private_networks=True)
    assert message.attachments[0].content == body(3000)


async def test_an_allowed_host_is_fetched_from_the_checked_address_with_its_name(
    server: FileServer,
) -> None:
    """``files.test`` exists only in the guard's resolver: the fetch succeeding shows the
    connection went to the address that was checked, not to a second DNS answer."""
    message = await resolve(
        with_url(server.url("/file/10", "files.test")), allowed_hosts=["files.test"]
    )
    assert message.attachments[0].content == body(10)
    assert server.hosts == [f"files.test:{server.port}"]


async def test_a_redirect_to_loopback_is_refused(server: FileServer) -> None:
    start = server.url("/redirect?to=" + server.url("/file/10"), "files.test")
    error = await refused(with_url(start), allowed_hosts=["files.test"])
    assert "127.0.0.1 is a loopback address" in str(error) and not error.temporary
    assert len(server.hosts) == 1  # the redirect was read, its target never requested


async def test_a_redirect_to_localhost_is_refused_after_real_dns(server: FileServer) -> None:
    start = server.url("/redirect?to=" + server.url("/file/10", "localhost"), "files.test")
    error = await refused(with_url(start), allowed_hosts=["files.test"])
    assert "localhost resolves to" in str(error)


async def test_redirects_are_followed_up_to_five(server: FileServer) -> None:
    target = server.url("/file/10", "files.test")
    one = server.url(f"/redirect?to={target}", "files.test")
    message = await resolve(with_url(one), allowed_hosts=["files.test"])
    assert message.attachments[0].content == body(10)
    error = await refused(with_url(server.url("/loop", "files.test")), allowed_hosts=["files.test"])
    assert "more than 5 redirects" in str(error) and not error.temporary
    assert len(server.hosts) == 2 + 6


async def test_a_name_resolving_to_the_metadata_service_is_refused() -> None:
    error = await refused(with_url("http://metadata.test/latest/meta-data/iam/"))
    assert "metadata.test resolves to 169.254.169.254" in str(error) and not error.temporary


async def test_only_http_and_https_are_fetched() -> None:
    error = await refused(with_url("file:///etc/passwd"), allow_private_networks=True)
    assert "is not http or https" in str(error) and not error.temporary


# --- sizes and failures -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/file/{n}", "/stream/{n}", "/declared/{n}"])
async def test_a_body_over_the_attachment_limit_is_refused(server: FileServer, path: str) -> None:
    url = server.url(path.format(n=64 * KB + 1))
    error = await refused(with_url(url), allow_private_networks=True, max_attachment_size=64 * KB)
    assert "over the attachment limit of 65536 bytes" in str(error) and not error.temporary


async def test_a_large_stream_is_not_read_to_the_end(server: FileServer) -> None:
    """50 MB without a length, 1 KB allowed: refused after the first chunks."""
    url = server.url(f"/stream/{50 * 1024 * KB}")
    error = await refused(with_url(url), allow_private_networks=True, max_attachment_size=KB)
    assert "more than 1024 bytes" in str(error)


async def test_a_compressed_body_is_inflated(server: FileServer) -> None:
    url = server.url(f"/gzip/{100 * KB}")
    [fetched] = (await resolve(with_url(url), allow_private_networks=True)).attachments
    assert fetched.content == bytes(100 * KB)


async def test_a_compressed_body_is_not_inflated_past_the_limit(server: FileServer) -> None:
    """200 MiB of zeros in 200 KiB of gzip, 1 MiB allowed: httpx inflated each network
    chunk whole before the limit was looked at (64 KiB of it is 64 MiB), a peak of over
    100 MB; the body is inflated here no further than the limit."""
    url = server.url(f"/gzip/{200 * 1024 * KB}")
    tracemalloc.start()
    try:
        error = await refused(
            with_url(url), allow_private_networks=True, max_attachment_size=1024 * KB
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "over the attachment limit of 1048576 bytes" in str(error) and not error.temporary
    assert peak < 16 * 1024 * KB


async def test_the_message_limit_counts_every_attachment(server: FileServer) -> None:
    inline = Attachment("a.txt", "text/plain", b"x" * 40 * KB)
    fetched = Attachment("b.bin", "application/octet-stream", b"", url=server.url("/file/40960"))
    message = make_message(attachments=(inline, fetched, fetched))
    settings = {"allow_private_networks": True, "max_message_size": 100 * KB}
    error = await refused(message, **settings)
    assert str(error).startswith("attachments.2:") and not error.temporary
    fits = make_message(attachments=(inline, fetched))
    assert len((await resolve(fits, **settings)).attachments[1].content) == 40 * KB


@pytest.mark.parametrize(
    ("status", "temporary"),
    [(404, False), (410, False), (403, False), (500, True), (503, True), (429, True)],
)
async def test_http_errors_fail_for_good_or_defer(
    server: FileServer, status: int, temporary: bool
) -> None:
    error = await refused(with_url(server.url(f"/status/{status}")), allow_private_networks=True)
    assert f"HTTP {status}" in str(error) and error.temporary is temporary


async def test_a_refused_connection_defers(server: FileServer) -> None:
    with FileServer() as closed:
        url = closed.url("/file/10")
    error = await refused(with_url(url), allow_private_networks=True)
    assert error.temporary and "ConnectError" in str(error)


async def test_reasons_never_show_credentials_or_the_query(server: FileServer) -> None:
    url = f"http://user:s3cret@127.0.0.1:{server.port}/status/404?token=s3cret"
    error = await refused(with_url(url), allow_private_networks=True)
    assert "s3cret" not in str(error) and "/status/404" in str(error)


async def test_https_keeps_the_name_for_the_certificate_check(tmp_path: Path) -> None:
    """Connected to 127.0.0.1, the certificate is still checked against ``files.test``."""
    server_tls, client_tls = tls_pair(tmp_path, "files.test")
    transport = httpx.AsyncHTTPTransport(verify=client_tls)
    settings = AttachmentSettings(allowed_hosts=["files.test", "other.test"])

    async def other(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]

    with FileServer(tls=server_tls) as https:
        async with SendTimeContent(settings, resolver=other, http_transport=transport) as content:
            good = await content(with_url(https.url("/file/10", "files.test")))
            assert good.message.attachments[0].content == body(10)
            with pytest.raises(
                AttachmentUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|ConnectError"
            ):
                await content(with_url(https.url("/file/10", "other.test")))


# --- path attachments ---------------------------------------------------------------------


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "vol"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "report.pdf").write_bytes(b"%PDF-1.7 report")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "sub" / "escape.txt")
    os.symlink(root / "sub" / "report.pdf", root / "inside.pdf")
    return root


def with_path(*paths: str) -> Message:
    files = tuple(Attachment(f"f{i}", "application/pdf", b"", path=p) for i, p in enumerate(paths))
    return make_message(attachments=files)


async def test_a_path_attachment_is_read_from_its_volume(volume: Path) -> None:
    message = await resolve(
        with_path("docs:sub/report.pdf", "docs:inside.pdf"), volumes={"docs": volume}
    )
    assert [a.content for a in message.attachments] == [b"%PDF-1.7 report"] * 2


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("docs:sub/escape.txt", "leads outside its volume"),
        ("docs:../secret.txt", "without '..'"),
        ("docs:sub/../../secret.txt", "without '..'"),
        ("docs:/etc/passwd", "must be relative"),
        ("docs:sub/missing.pdf", "No such file"),
        ("docs:sub", "not a regular file"),
        ("other:sub/report.pdf", "no volume named 'other'"),
        ("sub/report.pdf", "volume:sub/path"),
    ],
)
async def test_paths_out_of_the_volume_are_refused(volume: Path, path: str, reason: str) -> None:
    error = await refused(with_path(path), volumes={"docs": volume})
    assert reason in str(error) and not error.temporary


async def test_a_path_over_the_attachment_limit_is_refused(volume: Path) -> None:
    error = await refused(
        with_path("docs:sub/report.pdf"), volumes={"docs": volume}, max_attachment_size=8
    )
    assert "over the attachment limit of 8 bytes" in str(error)


# --- through the gateway: REST → queue → dispatcher → a real upstream ----------------------


async def test_url_and_path_attachments_reach_the_upstream(
    start_gateway: GatewayFactory, server: FileServer, volume: Path
) -> None:
    attachments = {"allow_private_networks": True, "volumes": {"docs": str(volume)}}
    async with (
        Upstream() as up,
        start_gateway(relay_url=up.url, attachments=attachments) as gw,
        api(gw) as client,
    ):
        files = [
            {"filename": "a.bin", "url": server.url("/file/5000")},
            {
                "filename": "r.pdf",
                "content_type": "application/pdf",
                "path": "docs:sub/report.pdf",
            },
        ]
        response = await client.post("/messages", json=submitted(attachments=files))
        [mid] = response.json()["ids"]
        await wait_for_state(client, mid, "sent")
    [received] = up.received
    got = {p.get_filename(): p.get_content() for p in received.message.iter_attachments()}
    assert got == {"a.bin": body(5000), "r.pdf": b"%PDF-1.7 report"}


@pytest.mark.parametrize(
    ("path", "state"), [("/status/404", "failed"), ("/status/503", "deferred")]
)
async def test_an_unavailable_url_fails_or_defers_the_message(
    start_gateway: GatewayFactory, server: FileServer, path: str, state: str
) -> None:
    settings = {"allow_private_networks": True}
    async with (
        Upstream() as up,
        start_gateway(relay_url=up.url, attachments=settings) as gw,
        api(gw) as client,
    ):
        files = [{"filename": "a.bin", "url": server.url(path)}]
        response = await client.post("/messages", json=submitted(attachments=files))
        [mid] = response.json()["ids"]
        record = await wait_for_state(client, mid, state)
    assert up.received == []
    [attempt, *_] = record["attempts"]
    assert attempt["failure_class"] == "content" and path in attempt["text"]


async def test_the_default_settings_refuse_a_loopback_url(
    start_gateway: GatewayFactory, server: FileServer
) -> None:
    async with Upstream() as up, start_gateway(relay_url=up.url) as gw, api(gw) as client:
        files = [{"filename": "a.bin", "url": server.url("/file/10")}]
        response = await client.post("/messages", json=submitted(attachments=files))
        [mid] = response.json()["ids"]
        record = await wait_for_state(client, mid, "failed")
    assert "loopback address" in record["attempts"][0]["text"] and server.hosts == []
