"""What a run did, as data: its mode, its outcome and the RunSummary the CLI renders.

Light on purpose (no HTTP, no event loop), so a display or a report can import it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from batchgen.errors import StopKind
from batchgen.provider.pacing import PaceReport
from batchgen.storage.spend import Spend

__all__ = ["RunMode", "RunOutcome", "RunSummary"]


class RunMode(StrEnum):
    RUN = "run"          # submit what is not done, collect everything
    COLLECT = "collect"  # only follow tasks already submitted (timed-out ones too)
    RETRY = "retry"      # put failed jobs back, then run


class RunOutcome(Enum):
    """How a run ended, most serious first; the CLI maps each to its exit code."""

    OUTPUT_FAILED = "output"        # the folder could not be written (disk full, read-only)
    STOPPED = "stopped"             # the provider stopped the batch (key, balance, endpoint)
    BUDGET = "budget"               # the next submit could pass max_cost
    INTERRUPTED = "interrupted"     # Ctrl-C or SIGTERM
    JOBS_FAILED = "failed"          # some jobs failed
    FINISHED = "finished"           # nothing failed (work may be left: see pending)


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
    submitted: int = 0   # submit requests the provider answered: tasks created plus refused
    refused: int = 0     # of those, refused as invalid (no task created)
    collected: int = 0
    already_done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retryable_failed: int = 0
    tasks_created: int = 0
    maybe_duplicated: int = 0
    possibly_created: int = 0
    redownloaded: int = 0  # done jobs whose files were missing or broken, fetched from their task
    redone: int = 0        # jobs submitted anew because the provider had forgotten their task
    resubmitted_stuck: int = 0  # retry: tasks still unfinished after one more poll, submitted anew
    size_mismatched: int = 0    # images saved at another size than asked for (this run)
    size_example: str | None = None
    renamed: int = 0            # done jobs whose files keep an old name after a filename edit
    renamed_example: tuple[str, str] | None = None  # (file kept, name the manifest gives now)
    nothing_to_retry: bool = False  # retry found no failed job to run again (and ran nothing)
    adopted: bool = False
    goal: int = 0               # what this run set out to have done (fewer with max_jobs)
    max_jobs: int | None = None
    vanished: int = 0
    vanished_sample: list[str] = field(default_factory=list)
    stopped: str | None = None
    stop_kind: StopKind | None = None
    output_failed: bool = False
    interrupted: bool = False
    elapsed: float = 0.0
    syncs: int = 0              # group commits (one fsync of every file saved since the last)
    sync_seconds: float = 0.0   # time they took, in the committer's worker thread
    mode: RunMode = RunMode.RUN
    shard: str | None = None    # "I/N" when this run took one shard; counts are the shard's
    location: str | None = None  # where the images went, when not in ``folder`` (a store URL)
    copy_failed: str | None = None  # the ledger's last copy to the store failed: why
    pacing: PaceReport | None = None
    budget_reached: bool = False  # submitting stopped at max_cost (what was paid is collected)
    spend: Spend | None = None    # spent and budget at the end (None: no max_cost)
    rederived: int = 0            # done jobs whose caption or sidecar fields were rewritten

    @property
    def outcome(self) -> RunOutcome:
        if self.output_failed:
            return RunOutcome.OUTPUT_FAILED
        if self.stop_kind is not None:
            return RunOutcome.STOPPED
        if self.budget_reached:
            return RunOutcome.BUDGET
        if self.interrupted:
            return RunOutcome.INTERRUPTED
        if self.failed:
            return RunOutcome.JOBS_FAILED
        return RunOutcome.FINISHED
