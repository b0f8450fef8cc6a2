"""What the engine tells whoever watches a run: typed notices and the Reporter protocol.

The engine never prints. It hands notices to a Reporter, which the CLI renders as text (and
a notebook or a web page may render otherwise); with no Reporter a run is silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from batchgen.engine.stats import RunStats
from batchgen.storage.identity import Target
from batchgen.storage.spend import Spend

__all__ = ["Checking", "Leaving", "Notice", "PossiblyCreated", "Redo", "Redoing", "Reporter",
           "Silent", "Starting", "Stopping"]


@dataclass(frozen=True, slots=True)
class Checking:
    """The manifest is being checked in full before anything is sent (``jobs`` before
    exclude); for a big manifest this takes seconds."""

    manifest: str
    jobs: int


@dataclass(frozen=True, slots=True)
class Starting:
    """The checks passed: what this run is about to do, and where."""

    mode: str
    batch: str
    folder: Path
    target: Target
    planned: int
    done: int
    to_submit: int
    to_collect: int
    failed: int
    vanished: int = 0
    renamed: int = 0
    max_jobs: int | None = None
    adopted: Target | None = None  # the folder's previous target, when this run adopted it
    shard: str | None = None       # "I/N": this run takes one shard; ``planned`` is the shard's
    shard_source: str | None = None  # where the index came from (--shard, Slurm, ...)
    concurrency: int | None = None   # this run's ceiling on tasks in flight (a shard's share)
    location: str | None = None      # where the images go, when not in ``folder`` (a store URL)
    spend: Spend | None = None       # spent so far and the budget (None: no max_cost)
    share_left: int | None = None    # a shard: images its share of the budget still pays for
    estimate_seconds: float | None = None  # the work to submit, as the plan estimates it
    cost: float | None = None        # ... and its cost at price_per_image (None: no price)


class Redo(Enum):
    """Why a run submits jobs again that it had already followed."""

    FORGOTTEN = "forgotten"  # the provider no longer knows the task
    STUCK = "stuck"          # retry: still unfinished after one more poll


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


@dataclass(frozen=True, slots=True)
class Redoing:
    """Jobs submitted anew in this run, and why (a STUCK task may still finish and be billed)."""

    count: int
    why: Redo


Notice = Checking | Starting | PossiblyCreated | Redoing | Stopping | Leaving


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
