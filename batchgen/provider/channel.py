"""HTTP requests handed straight to an httpx transport, without AsyncClient's machinery.

At hundreds of jobs per second, AsyncClient's URL merging, cookie jar, auth and redirect
flows cost more CPU than the request itself, and batchgen needs none of them. A channel keeps
what matters: the transport seam (the simulator's in-process transport in tests, a pooled
connection otherwise), the environment's proxy settings, timeouts, and a cap on requests in
flight so they wait here instead of in httpcore's pool, which rescans every queued request
and every pooled connection (a syscall each) on each request.
"""

from __future__ import annotations

import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx

__all__ = ["Answer", "AnswerTooLarge", "Channel", "read_capped"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})


class AnswerTooLarge(Exception):
    """The server kept sending past the size any sane answer has."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer: status, headers and body."""

    status: int
    headers: httpx.Headers
    content: bytes


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The whole body, or AnswerTooLarge as soon as it passes ``max_bytes``."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise AnswerTooLarge(f"{int(declared)} bytes, over the {max_bytes} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(f"over the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for the process (the environment's ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` honoured, as httpx does): httpx would build one per transport, loading the
    whole CA bundle each time (about 16 ms of CPU), and a run opens one for the API, one for
    the image hosts and one per proxy."""
    return httpx.create_ssl_context()


class Channel:
    """Requests with fixed headers through one transport (or a direct and a proxied pool)."""

    def __init__(self, headers: list[tuple[str, str]], timeout: httpx.Timeout, connections: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._headers = headers
        self._extensions = {"timeout": timeout.as_dict()}
        self._connections = anyio.Semaphore(connections)
        self._pool_size = connections
        self._given = transport
        self._pools: dict[str | None, httpx.AsyncBaseTransport] = {}
        # The proxy decision per (scheme, host), made once: asking urllib each time reads the
        # whole environment, which cost more CPU than the rest of the request.
        self._routes: dict[tuple[str, str], httpx.AsyncBaseTransport] = {}
        self._last: tuple[str, httpx.AsyncBaseTransport] | None = None

    def _transport(self, url: str) -> httpx.AsyncBaseTransport:
        if self._given is not None:
            return self._given
        last = self._last
        if last is not None and url.startswith(last[0]):   # the API host, request after request
            return last[1]
        parts = urlsplit(url)
        route = (parts.scheme, parts.netloc)
        pool = self._routes.get(route)
        if pool is not None:
            return pool
        proxy = None
        if not urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = urllib.request.getproxies().get(parts.scheme)
        pool = self._pools.get(proxy)
        if pool is None:
            limits = httpx.Limits(max_connections=self._pool_size,
                                  max_keepalive_connections=self._pool_size)
            pool = self._pools[proxy] = httpx.AsyncHTTPTransport(proxy=proxy, limits=limits,
                                                                 verify=_tls_context())
        if len(self._routes) < 1024:   # image hosts are few; a flood of redirect hosts is not kept
            self._routes[route] = pool
        self._last = (f"{parts.scheme}://{parts.netloc}/", pool)
        return pool

    async def send(self, method: str, url: str, content: bytes | None = None, *,
                   max_bytes: int) -> Answer:
        """One request, its body read in full; raises AnswerTooLarge past ``max_bytes``."""
        request = httpx.Request(method, url, headers=self._headers, content=content,
                                extensions=self._extensions)
        async with self._connections:
            response = await self._transport(url).handle_async_request(request)
            try:
                content = await read_capped(response, max_bytes)
            finally:
                await response.aclose()
        return Answer(response.status_code, response.headers, content)

    @asynccontextmanager
    async def stream(self, url: str, max_redirects: int = 5) -> AsyncIterator[httpx.Response]:
        """GET ``url`` following redirects to any host, the body left to stream."""
        async with self._connections:
            for _ in range(max_redirects + 1):
                request = httpx.Request("GET", url, headers=self._headers, extensions=self._extensions)
                response = await self._transport(url).handle_async_request(request)
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    await response.aclose()
                    url = str(httpx.URL(url).join(location))
                    continue
                try:
                    yield response
                finally:
                    await response.aclose()
                return
        raise httpx.TooManyRedirects(f"more than {max_redirects} redirects", request=request)

    async def aclose(self) -> None:
        for transport in {id(t): t for t in [self._given, *self._pools.values()] if t}.values():
            await transport.aclose()
