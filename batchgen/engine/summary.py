"""What a run did, as data: its mode, its outcome and the RunSummary the CLI renders.

Light on purpose (no HTTP, no event loop), so a display or a report can import it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from batchgen.errors import StopKind

__all__ = ["Pacing", "RunMode", "RunOutcome", "RunSummary"]


class RunMode(StrEnum):
    RUN = "run"          # submit what is not done, collect everything
    COLLECT = "collect"  # only follow tasks already submitted (timed-out ones too)
    RETRY = "retry"      # put failed jobs back, then run


class RunOutcome(Enum):
    """How a run ended, most serious first; the CLI maps each to its exit code."""

    OUTPUT_FAILED = "output"        # the folder could not be written (disk full, read-only)
    STOPPED = "stopped"             # the provider stopped the batch (key, balance, endpoint)
    INTERRUPTED = "interrupted"     # Ctrl-C or SIGTERM
    JOBS_FAILED = "failed"          # some jobs failed
    FINISHED = "finished"           # nothing failed (work may be left: see pending)


@dataclass(frozen=True)
class Pacing:
    """What the provider's limits did to a run: the limit on tasks in flight (``concurrency``
    is its ceiling) over the run, the 429s by what they were taken for, the rate window."""

    ceiling: int
    limit_min: int
    limit_median: int
    limit_max: int
    refusals: dict[str, int] = field(default_factory=dict)   # "overload", "task cap", "rate window"
    window: int | None = None          # submits per minute allowed, given or learned
    window_learned: bool = False
    retries: int = 0                   # retries paid from the retry budget

    @property
    def adapted(self) -> bool:
        return self.limit_min < self.ceiling


@dataclass
class RunSummary:
    """What a run did and what is left, as data; ``outcome`` says how it ended."""

    batch: str
    folder: Path
    planned: int
    done: int = 0
    failed: int = 0
    pending: int = 0
    outstanding: int = 0
    submitted: int = 0
    collected: int = 0
    already_done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retryable_failed: int = 0
    tasks_created: int = 0
    maybe_duplicated: int = 0
    possibly_created: int = 0
    redownloaded: int = 0
    vanished: int = 0
    vanished_sample: list[str] = field(default_factory=list)
    stopped: str | None = None
    stop_kind: StopKind | None = None
    output_failed: bool = False
    interrupted: bool = False
    elapsed: float = 0.0
    mode: RunMode = RunMode.RUN
    pacing: Pacing | None = None

    @property
    def outcome(self) -> RunOutcome:
        if self.output_failed:
            return RunOutcome.OUTPUT_FAILED
        if self.stop_kind is not None:
            return RunOutcome.STOPPED
        if self.interrupted:
            return RunOutcome.INTERRUPTED
        if self.failed:
            return RunOutcome.JOBS_FAILED
        return RunOutcome.FINISHED
