"""A loopback TCP proxy that sees what a client sends a server, and can freeze it mid-request.

Put between an S3 client and the real server, it records every HTTP request line the client
sends (so a test can count listings and HEADs, or see the order of PUTs) and every byte (so a
test can prove a secret never went there), and ``stall_on(pattern, extra)`` stops forwarding
``extra`` bytes after ``pattern`` first appears: the server holds half a request, and the test
can kill the client there. No timing is involved: ``stalled`` is set when the freeze happens.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

__all__ = ["Proxy"]



def _requests(stream: bytearray, pos: int) -> tuple[list[tuple[str, str]], int]:
    """The complete HTTP/1.1 requests in ``stream`` from ``pos``, and where the next one starts."""
    found = []
    while True:
        head_end = stream.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return found, pos
        lines = bytes(stream[pos:head_end]).split(b"\r\n")
        method, path, _ = lines[0].decode("latin-1").split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.decode("latin-1").partition(":") for line in lines[1:])}
        body = head_end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:  # size line, data, CRLF ... a zero size, trailers, CRLF
                line_end = stream.find(b"\r\n", body)
                if line_end < 0:
                    return found, pos
                size = int(bytes(stream[body:line_end]).split(b";")[0], 16)
                if size == 0:
                    trailer_end = stream.find(b"\r\n\r\n", line_end - 2 if line_end >= 2 else 0)
                    if trailer_end < 0:
                        return found, pos
                    end = trailer_end + 4
                    break
                body = line_end + 2 + size + 2
                if body > len(stream):
                    return found, pos
        else:
            end = body + int(headers.get("content-length", "0"))
            if end > len(stream):
                return found, pos
        found.append((method, path))
        pos = end


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; a context manager that closes everything."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[tuple[str, str]] = []
        self.sent = bytearray()
        self.stalled = threading.Event()
        self._trigger: bytes | None = None
        self._extra = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall_on(self, pattern: bytes, extra: int) -> None:
        """Freeze the first connection whose request bytes contain ``pattern``, ``extra`` bytes on."""
        self._trigger, self._extra = pattern, extra

    def methods(self) -> list[str]:
        with self._lock:
            return [method for method, _ in self.requests]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            sockets = [self._listener, *self._sockets]
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        stream = bytearray()
        forwarded = parsed = 0
        limit: int | None = None
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    server.shutdown(socket.SHUT_WR)
                    return
                start = len(stream)
                stream += data
                complete, parsed = _requests(stream, parsed)
                with self._lock:
                    self.sent += data
                    self.requests += complete
                trigger = self._trigger
                if limit is None and trigger is not None:
                    found = stream.find(trigger, max(0, start - len(trigger)))
                    if found >= 0:
                        self._trigger = None
                        limit = found + self._extra
                end = len(stream) if limit is None else min(len(stream), limit)
                if end > forwarded:
                    server.sendall(stream[forwarded:end])
                    forwarded = end
                if limit is not None and forwarded >= limit:
                    self.stalled.set()
                    return  # stop reading: the client's request is frozen half sent
        except OSError:
            return

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    client.shutdown(socket.SHUT_WR)
                    return
                client.sendall(data)
        except OSError:
            return
