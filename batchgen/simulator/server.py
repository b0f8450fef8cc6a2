"""Serving the simulator over real HTTP: two uvicorn servers (API host, image host), one loop.

``serve()`` blocks until SIGINT/SIGTERM (the CLI); ``running_simulator()`` runs the pair in a
background thread on pre-bound ephemeral loopback ports (tests, benchmarks) and always stops
and joins it on exit. Sockets are bound before the thread starts, so the URLs are known at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from batchgen.simulator.app import Simulator
from batchgen.simulator.config import SimConfig

__all__ = ["running_simulator", "serve"]

_WILDCARDS = {"", "0.0.0.0", "::"}
_DELIBERATE_DROP = "ASGI callable returned without completing response."


class _DropsAreDeliberate(logging.Filter):
    """The drop and truncate faults end a response early on purpose; do not log them as bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _DELIBERATE_DROP


_uvicorn_error_logger = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _DropsAreDeliberate) for f in _uvicorn_error_logger.filters):
    _uvicorn_error_logger.addFilter(_DropsAreDeliberate())


class _Server(uvicorn.Server):
    # Two servers share one loop; the pair handles signals itself (or runs off the main thread).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say they are TCP,
    # and without it every answer waits out a 40 ms delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _base_url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _ServerPair:
    def __init__(self, sim: Simulator, sockets: list[socket.socket], *, access_log: bool,
                 log_config: dict | None, graceful_seconds: float) -> None:
        self.sockets = sockets
        self.servers = [
            _Server(uvicorn.Config(app, lifespan="off", access_log=access_log, log_config=log_config,
                                   log_level="info" if access_log else "warning",
                                   timeout_graceful_shutdown=graceful_seconds))
            for app in (sim.api_app, sim.image_app)
        ]

    @property
    def started(self) -> bool:
        return all(server.started for server in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            if server.should_exit:       # asked twice: stop waiting for open connections
                server.force_exit = True
            server.should_exit = True

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        async def announce() -> None:
            while not self.started:
                if any(server.should_exit for server in self.servers):
                    return
                await asyncio.sleep(0.005)
            if on_ready is not None:
                on_ready()

        await asyncio.gather(announce(), *(server.serve(sockets=[sock])
                                           for server, sock in zip(self.servers, self.sockets)))


def _open(config: SimConfig | None, host: str, port: int, image_port: int, public_host: str | None,
          clock: Callable[[], float]) -> tuple[Simulator, list[socket.socket]]:
    api_sock = _bind(host, port)
    try:
        image_sock = _bind(host, image_port)
    except OSError:
        api_sock.close()
        raise
    shown = public_host or ("127.0.0.1" if host in _WILDCARDS else host)
    sim = Simulator(config, clock=clock, api_base_url=_base_url(shown, api_sock),
                    image_base_url=_base_url(shown, image_sock))
    return sim, [api_sock, image_sock]


def serve(config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          image_port: int = 8001, public_host: str | None = None, access_log: bool = False,
          on_ready: Callable[[Simulator], None] | None = None) -> None:
    """Serve the API and the image host until SIGINT or SIGTERM, then return normally.

    Port 0 picks a free port; ``on_ready(sim)`` runs once both listen (sim's URLs are real).
    ``public_host`` is the host name written into URLs (default: ``host``, or 127.0.0.1 for a
    wildcard address). Raises OSError when a port cannot be bound.
    """
    sim, sockets = _open(config, host, port, image_port, public_host, time.monotonic)
    pair = _ServerPair(sim, sockets, access_log=access_log, log_config=LOGGING_CONFIG, graceful_seconds=5.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pair.stop)
        try:
            await pair.serve(lambda: on_ready(sim) if on_ready is not None else None)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(main())
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def running_simulator(config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                      image_port: int = 0, clock: Callable[[], float] = time.monotonic,
                      access_log: bool = False, start_timeout: float = 10.0) -> Iterator[Simulator]:
    """Run the simulator over real HTTP in a background thread for the ``with`` block.

    Both hosts listen on ``host`` (ephemeral ports by default); image URLs point at the second
    port, a different origin from the API. The servers are stopped and joined on exit.
    """
    sim, sockets = _open(config, host, port, image_port, None, clock)
    pair = _ServerPair(sim, sockets, access_log=access_log, log_config=None, graceful_seconds=2.0)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(pair.serve())
        except BaseException as exc:  # reported to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="batchgen-simulator", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not pair.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator's servers did not start") from (failure[0] if failure else None)
            time.sleep(0.002)
        yield sim
    finally:
        pair.stop()
        thread.join(timeout=30)
        for sock in sockets:
            sock.close()
