"""Virtual time for tests: trio's ``MockClock(autojump_threshold=0)`` under anyio.

Whenever every task waits, the clock jumps to the next deadline, so an hour of backoff takes
milliseconds and a test of timing asserts on the virtual seconds the engine spent. A simulator
that should share that time is built with ``clock=anyio.current_time``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import pytest
from trio.testing import MockClock

T = TypeVar("T")

#: Run an ``async def`` test in virtual time: ``@VIRTUAL_TIME`` above it.
VIRTUAL_TIME = pytest.mark.parametrize("anyio_backend", [pytest.param(
    ("trio", {"clock": MockClock(autojump_threshold=0)}), id="virtual-time")])


def run_virtual(func: Callable[..., Awaitable[T]], *args: object, clock: MockClock | None = None) -> T:
    """``anyio.run(func, *args)`` in virtual time; pass one ``clock`` to keep time going
    forward across several runs that share a simulator."""
    return anyio.run(func, *args, backend="trio",
                     backend_options={"clock": clock or MockClock(autojump_threshold=0)})
