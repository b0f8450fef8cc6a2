"""In-process httpx transports onto the simulator's ASGI apps: no sockets, same answers.

``httpx.ASGITransport`` buffers whole answers and cannot break a connection, so the apps
signal the wire-level faults (drop, cut body, endless body) by raising ``Interruption``,
and the transport turns it into what a socket would have given the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["INPROCESS_KEY", "Interruption", "SimulatorTransport"]

#: Scope key telling an app that it runs behind SimulatorTransport, not a real server.
INPROCESS_KEY = "batchgen.simulator.inprocess"

ASGIApp = Callable[..., Any]


class Interruption(Exception):
    """Raised by an app in-process where a server would break the connection.

    ``kind``: "drop" (nothing usable arrives), "cut" (status and headers arrive, then ``head``,
    then the connection breaks), "stream" (``head`` then zero bytes up to ``total``).
    """

    def __init__(self, kind: str, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None,
                 head: bytes = b"", total: int = 0) -> None:
        super().__init__(kind)
        self.kind = kind
        self.status = status
        self.headers = headers or []
        self.head = head
        self.total = total


class _BrokenBody(httpx.AsyncByteStream):
    def __init__(self, head: bytes, request: httpx.Request) -> None:
        self.head = head
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            yield self.head
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body", request=self.request)


class _LongBody(httpx.AsyncByteStream):
    _CHUNK = bytes(1 << 16)

    def __init__(self, head: bytes, total: int) -> None:
        self.head = head
        self.total = total

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        left = self.total - len(self.head)
        chunk = self._CHUNK
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            left -= len(piece)
            yield piece


def _mark_inprocess(app: ASGIApp) -> ASGIApp:
    async def inprocess_app(scope: dict, receive: Any, send: Any) -> None:
        scope[INPROCESS_KEY] = True
        await app(scope, receive, send)

    return inprocess_app


class SimulatorTransport(httpx.AsyncBaseTransport):
    """Sends each request to the simulator app whose base URL matches the request's host.

    ``api_transport()`` and ``image_transport()`` differ only in where a request for any other
    host goes, so one client can follow the image host's redirect to the API host.
    """

    def __init__(self, sim: Any, default: str) -> None:
        self._sim = sim
        self._api = httpx.ASGITransport(app=_mark_inprocess(sim.api_app))
        self._image = httpx.ASGITransport(app=_mark_inprocess(sim.image_app))
        self._default = self._api if default == "api" else self._image
        self._hosts: tuple[str, str, bytes, bytes] | None = None

    def _route(self, url: httpx.URL) -> httpx.ASGITransport:
        sim = self._sim
        hosts = self._hosts
        if hosts is None or hosts[0] != sim.api_base_url or hosts[1] != sim.image_base_url:
            hosts = self._hosts = (sim.api_base_url, sim.image_base_url,
                                   httpx.URL(sim.api_base_url).netloc, httpx.URL(sim.image_base_url).netloc)
        netloc = url.netloc
        if netloc == hosts[2]:
            return self._api
        if netloc == hosts[3]:
            return self._image
        return self._default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._route(request.url).handle_async_request(request)
        except Interruption as cut:
            if cut.kind == "drop":
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a complete response", request=request) from None
            if cut.kind == "cut":
                return httpx.Response(cut.status, headers=cut.headers, stream=_BrokenBody(cut.head, request))
            return httpx.Response(cut.status, headers=cut.headers, stream=_LongBody(cut.head, cut.total))
