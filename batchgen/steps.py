"""Work in steps: a generator that yields how far it got and returns its result.

A manifest's plan and a ledger's replay come in steps, so a caller on an event loop can let
it in between (``engine/runner.py``'s ``_in_steps``); a caller with nothing else to do runs
them through with ``drain``. Shared by every stage, like ``job.py``: it imports nothing.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

__all__ = ["drain"]

T = TypeVar("T")


def drain(steps: Generator[int, None, T]) -> T:
    """Run ``steps`` to the end and return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
