"""Virtual time for tests: trio's ``MockClock(autojump_threshold=0)`` under anyio.

Whenever every task waits, the clock jumps to the next deadline, so an hour of backoff takes
milliseconds and a test of timing asserts on the virtual seconds the engine spent. A simulator
that should share that time is built with ``clock=anyio.current_time``.

The clock also jumps while a task waits for a worker thread (the ledger's fsync), so a hang
guard must not be a virtual deadline: it would fire the moment the run's last wait is a
thread. ``run_virtual`` guards in real seconds instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import threading

import anyio
import pytest
import trio
from trio.testing import MockClock

T = TypeVar("T")

#: Run an ``async def`` test in virtual time: ``@VIRTUAL_TIME`` above it. Each test gets a clock
#: of its own from the ``anyio_backend`` fixture (tests/conftest.py), starting at zero, so no
#: test's timing depends on what ran before it in the same worker.
VIRTUAL = "virtual"
VIRTUAL_TIME = pytest.mark.parametrize("anyio_backend", [pytest.param(VIRTUAL, id="virtual-time")],
                                       indirect=True)


def backend_for(param: str) -> str | tuple[str, dict[str, object]]:
    """What anyio's pytest plugin is given for ``param``: trio on a fresh MockClock for VIRTUAL."""
    if param == VIRTUAL:
        return "trio", {"clock": MockClock(autojump_threshold=0)}
    return param


def run_virtual(func: Callable[..., Awaitable[T]], *args: object, clock: MockClock | None = None,
                real_limit: float = 120.0) -> T:
    """``anyio.run(func, *args)`` in virtual time; pass one ``clock`` to keep time going
    forward across several runs that share a simulator. Raises TimeoutError when it takes
    more than ``real_limit`` seconds of real time."""

    async def guarded() -> T:
        token = trio.lowlevel.current_trio_token()
        with anyio.CancelScope() as scope:
            timer = threading.Timer(real_limit, token.run_sync_soon, (scope.cancel,))
            timer.start()
            try:
                return await func(*args)
            finally:
                timer.cancel()
        raise TimeoutError(f"still running after {real_limit:g} real seconds")

    return anyio.run(guarded, backend="trio",
                     backend_options={"clock": clock or MockClock(autojump_threshold=0)})
