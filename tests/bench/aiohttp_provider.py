"""An alternative HTTP layer for the overhead benchmark: aiohttp under batchgen's provider.

``AiohttpProviderClient`` is batchgen's ``ProviderClient`` (the same retries, limits, error
classification, image check; the ``Provider`` the engine sees) with its two channels, the
only code that touches HTTP, replaced by channels over one aiohttp session each. What the
benchmark measures between the two is then the HTTP layer alone: httpx's request and
response models over httpcore and h11 against aiohttp's C-accelerated parser. ``AiohttpBatch``
is a ``Batch`` whose provider is that client. Benchmark-only: it lives in ``tests/bench/``,
needs ``aiohttp`` (the ``bench`` extra) and runs on asyncio only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
import httpx

from batchgen.engine.runner import Batch
from batchgen.provider.channel import REDIRECTS, Answer, AnswerTooLarge
from batchgen.provider.client import ClientOptions, ProviderClient

__all__ = ["AiohttpBatch", "AiohttpChannel", "AiohttpProviderClient"]


class _Response:
    """The little of an httpx.Response that the client reads from a streamed download."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = httpx.Headers(list(response.raw_headers))

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


def _translated(exc: BaseException) -> httpx.TransportError:
    """aiohttp's failures as the httpx errors the client classifies (sent or not, reached)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc))
    return httpx.ReadError(f"{type(exc).__name__}: {exc}")


class AiohttpChannel:
    """``Channel``'s three calls (send, stream, aclose) over one aiohttp session."""

    def __init__(self, headers: list[tuple[str, str]], timeout: float, connections: int) -> None:
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout, sock_connect=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:   # made inside the running loop, on first use
            connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout,
                auto_decompress=False, skip_auto_headers=("Accept-Encoding",))
        return self._session

    async def send(self, method: str, url: str, content: bytes | None = None, *,
                   max_bytes: int) -> Answer:
        try:
            async with self._open().request(method, url, data=content,
                                            allow_redirects=False) as response:
                body = await response.content.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise AnswerTooLarge(f"over the {max_bytes} byte limit")
                return Answer(response.status, httpx.Headers(list(response.raw_headers)), body)
        except aiohttp.ClientError as exc:
            raise _translated(exc) from exc
        except TimeoutError as exc:
            raise _translated(exc) from exc

    @asynccontextmanager
    async def stream(self, url: str, max_redirects: int = 5) -> AsyncIterator[_Response]:
        session = self._open()
        for _ in range(max_redirects + 1):
            try:
                response = await session.get(url, allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _translated(exc) from exc
            try:
                location = response.headers.get("location")
                if response.status in REDIRECTS and location:
                    url = str(httpx.URL(url).join(location))
                    continue
                try:
                    yield _Response(response)
                except aiohttp.ClientError as exc:
                    raise _translated(exc) from exc
                return
            finally:
                response.release()
        raise httpx.TooManyRedirects(f"more than {max_redirects} redirects")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AiohttpProviderClient(ProviderClient):
    """batchgen's provider client with aiohttp channels in place of the httpx ones."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options
        api_headers = [("Authorization", f"Bearer {self._key.reveal()}"),
                       ("Content-Type", "application/json"), ("Accept", "application/json"),
                       ("User-Agent", "batchgen-bench-aiohttp")]
        self._api = AiohttpChannel(api_headers, opts.timeout, opts.max_connections)
        self._images = AiohttpChannel([("User-Agent", "batchgen-bench-aiohttp")], opts.timeout,
                                      opts.image_connections or opts.max_connections)


class AiohttpBatch(Batch):
    """A Batch whose provider speaks aiohttp (the runner builds the rest as usual)."""

    def _provider(self, target, key, clock, limits, downloads):
        o = self.options
        options = o.client or ClientOptions(max_connections=max(4, min(64, limits.tasks.ceiling // 8)))
        if options.image_connections is None:
            options = replace(options, image_connections=downloads)
        return AiohttpProviderClient(target, key, options=options, limits=limits,
                                     sleep=clock.sleep, now=clock.now)
