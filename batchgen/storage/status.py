"""What a batch has done so far, read from its ledger without disturbing a running batch.

Reads only: no lock is taken and nothing is written, so ``status`` is safe beside ``run``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.storage.ledger import STATES, Ledger, read_run_note
from batchgen.storage.results import join, vanished

__all__ = ["StatusReport", "batch_status"]

RATE_WINDOW = 600.0


@dataclass
class StatusReport:
    """Counts by state, failures by reason, pace and what was paid for."""

    batch: str | None
    folder: Path
    planned: int | None
    counts: dict[str, int]
    failures: list[dict[str, Any]] = field(default_factory=list)
    tasks_created: int = 0
    maybe_duplicated: int = 0
    vanished: int = 0
    unreadable_lines: int = 0
    rate_per_minute: float = 0.0
    eta_seconds: float | None = None
    #: a run holding the folder now: pid, tasks in flight, the current limit and its ceiling,
    #: seconds paused, the rate window, seconds of outage (None when no run is live)
    running: dict[str, Any] | None = None

    @property
    def remaining(self) -> int:
        done = self.counts.get("done", 0) + self.counts.get("failed", 0)
        total = self.planned if self.planned is not None else sum(self.counts.values())
        return max(0, total - done)

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "folder": str(self.folder), "planned": self.planned,
                "counts": self.counts, "failures": self.failures,
                "tasks_created": self.tasks_created, "maybe_duplicated": self.maybe_duplicated,
                "vanished": self.vanished, "unreadable_lines": self.unreadable_lines,
                "rate_per_minute": round(self.rate_per_minute, 2), "eta_seconds": self.eta_seconds,
                "running": self.running}


def batch_status(target: str | Path) -> StatusReport:
    """Status of the batch named by a manifest file or a batch folder."""
    path = Path(target)
    manifest = None
    if path.is_file():
        from batchgen.manifest import load_manifest  # only a manifest target needs it

        manifest = load_manifest(path)
    folder = manifest.output if manifest is not None else path
    ledger = Ledger.read(folder)
    counts: Counter[str] = Counter()
    planned = None
    gone = 0
    if manifest is not None:
        planned = 0
        for result in join(manifest.jobs(), ledger):
            planned += 1
            counts[result.state] += 1
        gone = sum(1 for _ in vanished(ledger))
        in_manifest = [(i, r) for i, r in ledger.failures() if r.seen]
    else:
        counts = ledger.counts()
        in_manifest = list(ledger.failures())
    report = StatusReport(batch=ledger.batch, folder=folder, planned=planned,
                          counts={state: counts.get(state, 0) for state in STATES},
                          tasks_created=ledger.stats.tasks_created,
                          maybe_duplicated=ledger.stats.maybe_duplicated, vanished=gone,
                          unreadable_lines=ledger.stats.bad_lines)
    report.failures = _failures(in_manifest)
    report.running = read_run_note(folder)
    recent = [t for t in ledger.stats.recent_done if t >= time.time() - RATE_WINDOW]
    if len(recent) >= 2:
        span = max(time.time() - min(recent), 1.0)
        report.rate_per_minute = len(recent) / span * 60
        report.eta_seconds = report.remaining / (report.rate_per_minute / 60)
    return report


def _failures(failed: list) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for job_id, rec in failed:
        reason = str(rec.get("reason", "unknown"))
        key = rec.label
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"reason": key, "count": 0, "retryable": bool(rec.get("retryable", True)),
                                   "example_job": job_id, "example": reason[:200]}
        group["count"] += 1
    return sorted(groups.values(), key=lambda g: -g["count"])
