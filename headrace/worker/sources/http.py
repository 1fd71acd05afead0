"""Documents over HTTP(S): listed URLs and sitemaps, fetched with every hostile-server guard on.

Guards: only http and https; redirects followed by hand (so the limit, the scheme check and the
dropping of secret headers on a host change are ours); a total deadline per request on top of
connect and read timeouts, so a server that dribbles bytes cannot hold a worker; a streamed byte cap;
and, unless `allowPrivateNetworks` is set, a refusal to connect to any non-public address, checked
on the resolved address of every connection (redirects included, DNS rebinding too).
"""

import asyncio
import re
import socket
import zlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.etree import ElementTree

import httpcore
import httpx

from headrace.model import HttpSource
from headrace.worker.errors import DocumentError
from headrace.worker.metadata import http_date
from headrace.worker.secrets import read_secret
from headrace.worker.sources.addresses import BlockedAddress, forbidden_address
from headrace.worker.sources.base import DocumentRef, Fetched

__all__ = ["BlockedAddress", "WebPages", "checked_headers", "forbidden_address", "parse_sitemap"]

PAGE_SIZE = 1000
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemaps protocol's own cap, uncompressed
MAX_SITEMAP_DEPTH = 3
_REDIRECTS = {301, 302, 303, 307, 308}
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses non-public addresses, and connects to the address it checked."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        blocked = [a for a in addresses if forbidden_address(a)]
        if blocked:
            raise BlockedAddress(f"{host} resolves to non-public address {blocked[0]}")
        return await self._inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _transport(*, allow_private: bool) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    if not allow_private:
        # httpx takes no network backend, so swap the pool it built for one with the same TLS
        # settings that connects through the guard.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedBackend()
        )
    return transport


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")  # what httpx sends: ASCII without control characters


def checked_headers(secret: str, headers: dict[str, str]) -> dict[str, str]:
    """The Secret's headers with surrounding whitespace stripped (RFC 9110 allows none), or DocumentError
    naming the key (never the value) whose name or value cannot be sent. Checked once, up front, so the
    HTTP client never raises an error quoting a secret value."""
    checked = {}
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise DocumentError(f"Secret {secret!r}: key {name!r} is not a valid HTTP header name")
        value = value.strip(" \t\r\n")
        if not _HEADER_VALUE.match(value):
            raise DocumentError(f"Secret {secret!r}: the value of key {name!r} holds a control or non-ASCII character")
        checked[name] = value
    return checked


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class WebPages:
    """The URLs and sitemap entries of `spec.source.http`."""

    def __init__(self, spec: HttpSource, *, secrets_dir: Path) -> None:
        self.spec = spec
        self.secret_headers = (
            checked_headers(spec.headers_secret_ref.name, read_secret(secrets_dir, spec.headers_secret_ref.name))
            if spec.headers_secret_ref
            else {}
        )
        timeout = httpx.Timeout(
            connect=spec.connect_timeout_seconds,
            read=spec.read_timeout_seconds,
            write=spec.read_timeout_seconds,
            pool=spec.connect_timeout_seconds,
        )
        self.client = httpx.AsyncClient(
            transport=_transport(allow_private=spec.allow_private_networks),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": spec.user_agent},
        )

    async def pages(self) -> AsyncIterator[list[DocumentRef]]:
        seen: set[str] = set()
        page: list[DocumentRef] = []
        async for url in self._all_urls():
            if url in seen:
                continue
            seen.add(url)
            page.append(DocumentRef(uri=url))
            if len(page) >= PAGE_SIZE:
                yield page
                page = []
        if page:
            yield page

    async def _all_urls(self) -> AsyncIterator[str]:
        for url in self.spec.urls:
            yield url
        visited: set[str] = set()
        for sitemap in self.spec.sitemaps:
            async for url in self._sitemap(sitemap, 0, visited):
                yield url

    async def _sitemap(self, url: str, depth: int, visited: set[str]) -> AsyncIterator[str]:
        if url in visited:
            return
        visited.add(url)
        fetched = await self.fetch(DocumentRef(uri=url), max_bytes=MAX_SITEMAP_BYTES)
        assert fetched is not None
        kind, locations = parse_sitemap(fetched.data, url)
        if kind == "urlset":
            for location in locations:
                yield location
            return
        if depth + 1 > MAX_SITEMAP_DEPTH:
            raise DocumentError(f"sitemap index {url} nests deeper than {MAX_SITEMAP_DEPTH} levels")
        for location in locations:
            async for page_url in self._sitemap(location, depth + 1, visited):
                yield page_url

    async def fetch(self, ref: DocumentRef, *, max_bytes: int, known_version: str | None = None) -> Fetched | None:
        try:
            async with asyncio.timeout(self.spec.timeout_seconds):
                return await self._get(ref.uri, max_bytes, known_version)
        except TimeoutError:
            raise DocumentError(
                f"request took longer than source.http.timeoutSeconds ({self.spec.timeout_seconds:g}s)"
            ) from None
        except BlockedAddress as exc:
            raise DocumentError(f"refused: {exc} (set source.http.allowPrivateNetworks to allow)") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DocumentError(f"bad URL: {exc}") from None
        except httpx.RemoteProtocolError as exc:
            raise DocumentError(f"broken HTTP response: {exc}") from None

    async def _get(self, url: str, max_bytes: int, known_version: str | None) -> Fetched | None:
        first = _origin(url)
        for _ in range(self.spec.max_redirects + 1):
            headers = dict(self.secret_headers) if _origin(url) == first else {}
            if known_version and known_version.startswith("etag:"):
                headers["If-None-Match"] = known_version.removeprefix("etag:")
            elif known_version and known_version.startswith("modified:"):
                headers["If-Modified-Since"] = known_version.removeprefix("modified:")
            async with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise DocumentError(f"redirected to a URL that is not http or https: {url[:200]}")
                    continue
                if response.status_code == 304:
                    return None
                _check_status(response)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise DocumentError(f"document is {declared} bytes, over limits.maxDocumentBytes ({max_bytes})")
                body = bytearray()
                async for part in response.aiter_raw():
                    body += part
                    if len(body) > max_bytes:
                        raise DocumentError(f"document is over limits.maxDocumentBytes ({max_bytes})")
                data = _decode_body(bytes(body), response.headers.get("content-encoding", ""), max_bytes)
                etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
                version = f"etag:{etag}" if etag else (f"modified:{modified}" if modified else None)
                meta = {
                    "modified": http_date(modified),
                    "declaredLanguage": response.headers.get("content-language"),
                }
                return Fetched(data, version=version, media_type=response.headers.get("content-type"), metadata=meta)
        raise DocumentError(f"more than source.http.maxRedirects ({self.spec.max_redirects}) redirects")

    async def close(self) -> None:
        await self.client.aclose()


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 300:
        return
    if status == 429 or status >= 500:
        # Passing trouble on the server's side: raise a plain error so the task is retried.
        raise httpx.HTTPStatusError(f"HTTP {status} from {response.url}", request=response.request, response=response)
    raise DocumentError(f"HTTP {status} {response.reason_phrase}".strip())


def _decode_body(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """Undo a gzip or deflate Content-Encoding without letting it expand past max_bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise DocumentError(f"unsupported Content-Encoding {encoding!r}")
    return _inflate(
        raw,
        wbits=47 if "gzip" in encoding else 15,
        max_bytes=max_bytes,
        corrupt=f"corrupt {encoding} body",
        too_big=f"document inflates past limits.maxDocumentBytes ({max_bytes})",
    )


def _inflate(raw: bytes, *, wbits: int, max_bytes: int, corrupt: str, too_big: str) -> bytes:
    """Decompress zlib/gzip data, stopping at max_bytes + 1 so a bomb is caught before it is in memory."""
    inflater = zlib.decompressobj(wbits=wbits)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise DocumentError(f"{corrupt}: {exc}") from None
    if len(data) > max_bytes:
        raise DocumentError(too_big)
    if not inflater.eof:
        raise DocumentError(f"{corrupt}: truncated stream")
    return data


def parse_sitemap(data: bytes, url: str) -> tuple[str, list[str]]:
    """(`urlset` or `sitemapindex`, the <loc> URLs) of a plain or gzipped sitemap. DTDs are refused,
    so entity tricks (billion laughs, external entities) never reach the parser."""
    if data.startswith(b"\x1f\x8b"):
        data = _inflate(
            data,
            wbits=31,
            max_bytes=MAX_SITEMAP_BYTES,
            corrupt=f"sitemap {url}: corrupt gzip",
            too_big=f"sitemap {url} is over {MAX_SITEMAP_BYTES} bytes uncompressed",
        )
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise DocumentError(f"sitemap {url}: DTDs and entities are not allowed")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise DocumentError(f"sitemap {url}: invalid XML: {exc}") from None
    kind = root.tag.removeprefix(_SITEMAP_NS)
    if kind not in ("urlset", "sitemapindex"):
        raise DocumentError(f"sitemap {url}: root element is <{kind}>, not <urlset> or <sitemapindex>")
    locations = []
    for loc in root.iter(f"{_SITEMAP_NS}loc"):
        text = (loc.text or "").strip()
        if text:
            location = urljoin(url, text)
            if urlsplit(location).scheme in ("http", "https"):
                locations.append(location)
    return kind, locations
