"""What the engine tells whoever watches a run: typed notices and the Reporter protocol.

The engine never prints. It hands notices to a Reporter, which the CLI renders as text (and
a notebook or a web page may render otherwise); with no Reporter a run is silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from batchgen.engine.stats import RunStats

__all__ = ["Leaving", "Notice", "PossiblyCreated", "Reporter", "Silent", "Stopping"]


@dataclass(frozen=True, slots=True)
class PossiblyCreated:
    """Jobs an earlier run was submitting when it stopped: a task may exist without its id."""

    count: int


@dataclass(frozen=True, slots=True)
class Stopping:
    """The first interrupt: no new submits; the tasks in flight are still collected."""

    in_flight: int


@dataclass(frozen=True, slots=True)
class Leaving:
    """The second interrupt: leaving at once, the ledger intact."""


Notice = PossiblyCreated | Stopping | Leaving


class Reporter(Protocol):
    """Shows a run: ``notice`` for events, ``watch`` refreshes a display until cancelled."""

    def notice(self, notice: Notice) -> None: ...

    async def watch(self, stats: RunStats) -> None: ...


class Silent:
    """The Reporter of a run nobody watches."""

    def notice(self, notice: Notice) -> None:
        pass

    async def watch(self, stats: RunStats) -> None:
        import anyio

        await anyio.sleep_forever()
