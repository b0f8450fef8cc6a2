"""Where blocking work on image bytes runs: inline when small, in a worker thread when big.

Decoding or writing a small image takes less time than the thread hop, and a worker thread
holding the GIL makes every socket call of the event loop wait to get it back; a big image
would stall every other job if decoded on the loop, so it goes to a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

__all__ = ["INLINE_BYTES", "off_loop"]

INLINE_BYTES = 512 * 1024
T = TypeVar("T")


async def off_loop(size: int, func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` for ``size`` bytes of work: inline up to INLINE_BYTES, else in a thread."""
    if size <= INLINE_BYTES:
        return func(*args)
    return await anyio.to_thread.run_sync(func, *args)
