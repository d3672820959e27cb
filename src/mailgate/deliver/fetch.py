"""Fetch a URL attachment at send time: http/https only, SSRF-checked, time- and size-capped.

Redirects are followed here, not by httpx, so every hop's address is checked by the
:class:`~mailgate.deliver.ssrf.NetGuard` (a public server answering ``302 Location:
http://127.0.0.1/`` must not get us there). Each request goes to the IP address the
guard checked, with the original name kept in ``Host`` and, for https, in the TLS
server name (``sni_hostname``), so the certificate is still verified for that name.
Proxies from the environment are not used: they would connect somewhere unchecked.

The size limit holds for the decoded body, and is kept while decoding: a compressed
body is inflated here, never more than the limit allows (httpx would inflate each
network chunk whole: 64 KiB of gzip can be 64 MiB), so only gzip and deflate are asked
for, and any other ``Content-Encoding`` is refused.
"""

from __future__ import annotations

import asyncio
import zlib
from types import TracebackType
from typing import TYPE_CHECKING

from mailgate.deliver.ssrf import AddressRefused, NetGuard, UnresolvableHost

if TYPE_CHECKING:  # imported where a URL is parsed or fetched: a capture server need not
    import httpx

__all__ = [
    "FetchFailed",
    "UrlFetcher",
    "check_url",
    "loggable_url",
    "pinned_request",
    "response_head",
]

MAX_REDIRECTS = 5
_TEMPORARY_STATUS = frozenset({408, 425, 429})  #: 4xx a later try may get past
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: RFC 9110 §8.4.1: what ``Content-Encoding`` may say, as zlib's window bits (47: a gzip
#: or zlib header, found by zlib; "deflate" is zlib's format, RFC 9110 §8.4.1.2)
_ENCODINGS = {"gzip": 47, "x-gzip": 47, "deflate": 47}


class FetchFailed(Exception):
    """The URL could not be fetched; ``temporary`` says whether a later try may work."""

    def __init__(self, reason: str, *, temporary: bool) -> None:
        super().__init__(reason)
        self.temporary = temporary


def check_url(url: str) -> httpx.URL:
    """The URL if it is absolute http(s) with a host; ``ValueError`` saying why not."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"scheme {parsed.scheme or '(none)'!r} is not http or https")
    if not parsed.host:
        raise ValueError("the URL has no host")
    return parsed


class UrlFetcher:
    """One client for every URL attachment, made at the first fetch; ``aclose()`` (or
    ``async with``) at shutdown."""

    def __init__(
        self,
        guard: NetGuard,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.guard = guard
        self.timeout = timeout
        self._transport = transport
        self._client_made: httpx.AsyncClient | None = None

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._client_made is None:
            import httpx

            # No keep-alive: connections are keyed by the checked IP, so a kept one could
            # serve another name on that address with the first name's certificate check.
            self._client_made = httpx.AsyncClient(
                transport=self._transport,
                trust_env=False,
                follow_redirects=False,
                timeout=self.timeout,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client_made

    async def fetch(self, url: str, limit: int) -> bytes:
        """The body at ``url`` (after at most 5 redirects), at most ``limit`` bytes."""
        import httpx

        try:
            async with asyncio.timeout(self.timeout):
                return await self._follow(url, limit)
        except TimeoutError:
            reason = f"{loggable_url(url)}: no answer in {self.timeout:g} s"
            raise FetchFailed(reason, temporary=True) from None
        except httpx.TransportError as exc:
            reason = f"{loggable_url(url)}: {type(exc).__name__}: {exc}"
            raise FetchFailed(reason, temporary=True) from exc
        except AddressRefused as exc:
            raise FetchFailed(str(exc), temporary=False) from exc
        except UnresolvableHost as exc:
            raise FetchFailed(str(exc), temporary=True) from exc

    async def _follow(self, url: str, limit: int) -> bytes:
        target = _parse(url)
        for _ in range(MAX_REDIRECTS + 1):
            request = await self._pinned(target)
            response = await self._client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    target = _parse(str(target.join(location)))
                    continue
                _check_status(response, target)
                return await _read_capped(response, limit, target)
            finally:
                await response.aclose()
        raise FetchFailed(
            f"{loggable_url(url)}: more than {MAX_REDIRECTS} redirects", temporary=False
        )

    async def _pinned(self, url: httpx.URL) -> httpx.Request:
        headers = {"Accept-Encoding": "gzip, deflate"}  # the ones _read_capped inflates
        return await pinned_request(self._client, self.guard, "GET", url, headers=headers)

    async def aclose(self) -> None:
        if self._client_made is not None:
            await self._client_made.aclose()

    async def __aenter__(self) -> UrlFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def response_head(response: httpx.Response, limit: int) -> bytes:
    """The first ``limit`` bytes of a streamed answer's body; the rest is not read (a huge
    answer is never held in memory: the caller closes the response, and its connection)."""
    kept = bytearray()
    async for chunk in response.aiter_bytes():
        kept += chunk[: limit - len(kept)]
        if len(kept) >= limit:
            break
    return bytes(kept)


async def pinned_request(
    client: httpx.AsyncClient,
    guard: NetGuard,
    method: str,
    url: httpx.URL,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Request:
    """A request to the address ``guard`` checked for ``url``'s host, the name kept for
    ``Host`` and the TLS server name; :class:`AddressRefused` or
    :class:`UnresolvableHost` when there is none it may reach."""
    host = url.host
    address = await guard.resolve(host, url.port or _DEFAULT_PORTS[url.scheme])
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request(
        method,
        url.copy_with(host=address),
        headers={**(headers or {}), "Host": url.netloc.decode("ascii")},
        content=content,
        extensions=extensions,
    )


def _parse(url: str) -> httpx.URL:
    try:
        return check_url(url)
    except ValueError as exc:
        raise FetchFailed(f"{loggable_url(url)}: {exc}", temporary=False) from None


def _check_status(response: httpx.Response, url: httpx.URL) -> None:
    """RFC 9110 §15: 2xx is the file; 5xx and 408/425/429 may pass later; other 4xx won't."""
    status = response.status_code
    if 200 <= status < 300:
        return
    temporary = status >= 500 or status in _TEMPORARY_STATUS
    reason = f"{loggable_url(str(url))}: HTTP {status} {response.reason_phrase}".rstrip()
    raise FetchFailed(reason, temporary=temporary)


async def _read_capped(response: httpx.Response, limit: int, url: httpx.URL) -> bytes:
    """The body, refused as soon as it (or its declared length) passes ``limit``."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FetchFailed(_too_big(url, f"{declared} bytes", limit), temporary=False)
    inflate = _inflater(response, url)
    body = bytearray()
    async for chunk in response.aiter_raw():
        try:  # at most one byte past the limit, however much the chunk would inflate to
            body += inflate.decompress(chunk, limit + 1 - len(body)) if inflate else chunk
        except zlib.error as exc:
            raise FetchFailed(f"{loggable_url(str(url))}: {exc}", temporary=False) from None
        if len(body) > limit:
            raise FetchFailed(_too_big(url, f"more than {limit} bytes", limit), temporary=False)
    return bytes(body)


def _inflater(response: httpx.Response, url: httpx.URL) -> zlib._Decompress | None:
    """None for a body sent as it is; a refusal for an encoding not asked for."""
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in _ENCODINGS:
        reason = f"{loggable_url(str(url))}: unsupported Content-Encoding {coding!r}"
        raise FetchFailed(reason, temporary=False)
    return zlib.decompressobj(_ENCODINGS[coding])


def _too_big(url: httpx.URL, size: str, limit: int) -> str:
    return f"{loggable_url(str(url))}: {size}, over the attachment limit of {limit} bytes"


def loggable_url(url: str) -> str:
    """The URL for a log line or a reason text: no credentials, no query (either may
    carry a secret)."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "the URL"
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
