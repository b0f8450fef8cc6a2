"""What a batch has done so far, read from its ledger without disturbing a running batch.

Reads only: no lock is taken and nothing is written, so ``status`` is safe beside ``run``.
Given only the folder, the planned job count comes from the ledger's record of the latest run
(and which recorded jobs that run's manifest no longer had), so an unfinished batch is never
called complete; given the manifest, every job is joined with its record.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.job import JobState
from batchgen.safetext import clean_text
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.ledger import (STATES, JobRecord, Ledger, LockHolder, ledger_files,
                                     read_run_note, read_run_notes)
from batchgen.storage.mirror import EVERY as UPLOAD_EVERY  # how often a run uploads its copies
from batchgen.storage.spend import spent_against_budget

if TYPE_CHECKING:
    from batchgen.storage.batch import OpenBatch

__all__ = ["StatusReport", "batch_status", "status_of", "store_status"]

RATE_WINDOW = 600.0


@dataclass
class StatusReport:
    """Planned, done, failed and pending jobs; failures by reason; pace; what was paid for.

    ``planned`` is the manifest's job count (given the folder alone, as the latest run
    recorded it); ``pending`` the planned jobs neither done, failed nor at the provider.
    ``eta_seconds`` is set only while a run is going and has a pace.
    """

    batch: str | None
    folder: Path
    planned: int
    counts: dict[str, int]
    done: int = 0
    failed: int = 0
    at_provider: int = 0
    pending: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    tasks_created: int = 0
    maybe_duplicated: int = 0
    vanished: int = 0
    missing: int = 0              # done jobs whose image is not there (a stat each)
    size_mismatched: int = 0
    size_example: str | None = None
    unreadable_lines: int = 0
    rate_per_minute: float = 0.0
    eta_seconds: float | None = None
    target: Target | None = None
    last_run: RunRecord | None = None
    holder: LockHolder | None = None
    running: bool | None = False  # None: a process on another host holds the folder
    planned_known: bool = True    # False: an old ledger without a run record (planned = recorded)
    manifest: str | None = None   # the manifest given, or the one the latest run recorded
    spent: float | None = None    # tasks paid for at price_per_image (None: no price known)
    max_cost: float | None = None  # the budget (the manifest's, or the latest run's)

    #: what a run holding the folder wrote lately: pid, tasks in flight, the current limit and
    #: its ceiling, seconds paused, the rate window, seconds of outage (None when none is live)
    live: dict[str, Any] | None = None
    #: shard runs holding a part of the folder: "I/N" -> holder (alive, or on another host)
    shards_running: dict[str, LockHolder] = field(default_factory=dict)
    ledgers: int = 1  # ledger files read (the folder's own and one per shard)
    #: read from an object store: its URL, and when each ledger copy was uploaded (seconds
    #: since the epoch; the figures are as of then)
    store: str | None = None
    copies: dict[str, float | None] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Where the batch is: its store URL, or its folder."""
        return self.store or str(self.folder)

    @property
    def uploaded(self) -> float | None:
        """When the newest of the store's ledger copies was uploaded (None: not a store)."""
        times = [t for t in self.copies.values() if t is not None]
        return max(times) if times else None

    @property
    def complete(self) -> bool:
        """Every planned job is done, and every done job's image is there."""
        return (self.planned > 0 and self.done >= self.planned and self.planned_known
                and not self.missing)

    @property
    def remaining(self) -> int:
        return max(0, self.planned - self.done - self.failed)

    def to_json(self) -> dict[str, Any]:
        run = self.last_run
        return {"batch": self.batch, "folder": self.location, "manifest": self.manifest,
                "planned": self.planned, "done": self.done, "failed": self.failed,
                "pending": self.pending, "at_provider": self.at_provider,
                "complete": self.complete, "planned_known": self.planned_known,
                "running": self.running,
                "pid": self.holder.pid if self.holder is not None and self.running else None,
                "target": self.target.to_json() if self.target is not None else None,
                "last_run": run.to_json() if run is not None else None,
                "counts": self.counts, "failures": self.failures,
                "tasks_created": self.tasks_created, "maybe_duplicated": self.maybe_duplicated,
                "vanished": self.vanished, "missing": self.missing,
                "spent": self.spent, "max_cost": self.max_cost,
                "size_mismatched": self.size_mismatched,
                "unreadable_lines": self.unreadable_lines,
                "rate_per_minute": round(self.rate_per_minute, 2), "eta_seconds": self.eta_seconds,
                "live": self.live, "ledgers": self.ledgers, "store": self.store,
                "as_of": _iso(self.uploaded) if self.store is not None else None,
                "ledger_copies": {name: _iso(at) for name, at in self.copies.items()}
                if self.store is not None else None,
                "shards_running": {shard: {"pid": h.pid, "host": h.host}
                                   for shard, h in self.shards_running.items()}}


def batch_status(target: str | Path, output: str | Path | None = None) -> StatusReport:
    """Status of the batch named by a manifest file (in ``output`` if given), a folder, or
    an object-store URL."""
    from batchgen.storage.batch import open_batch

    return status_of(open_batch(target, output=output))


def store_status(url: str) -> StatusReport:
    """Status of the batch under an object-store URL, from the ledger copies a run uploads."""
    return batch_status(url)


def status_of(batch: OpenBatch) -> StatusReport:
    """The status of an opened batch (``storage/batch.py``): its one count of jobs, with a
    stat of every done job's image (a done job whose image is gone is not complete).

    From a store, the figures are as of the copies' upload (``copies``, ``uploaded``): a store
    holds no lock, so a copy uploaded within the last few upload periods means a run may still
    be going (``running`` None), and an unfinished batch is never called complete."""
    ledger = batch.ledger
    assert ledger is not None
    report = _counted(batch)
    if batch.store is not None:
        store = batch.store
        report.store = store.url
        report.copies = {c.relative: c.uploaded for c in store.copies}
        report.ledgers = len(store.copies)
        newest = report.uploaded
        recent = newest is not None and time.time() - newest < 3 * UPLOAD_EVERY
        report.running = None if recent and not report.complete else False
        _pace(report, ledger)
        return report
    folder = batch.folder
    report.ledgers = len(ledger_files(folder)) or 1
    report.holder = Ledger.lock_holder(folder)
    report.running = report.holder.alive if report.holder is not None else False
    report.live = read_run_note(folder) if report.running else None
    for shard, holder in Ledger.holders(folder):
        if shard is not None and holder.alive is not False:
            report.shards_running[shard] = holder
    if report.shards_running and not report.running:
        alive = [h.alive for h in report.shards_running.values()]
        report.running = True if any(alive) else None
        if report.holder is None:
            report.holder = next(iter(report.shards_running.values()))
        notes = [note for shard, note in read_run_notes(folder) if shard is not None]
        report.live = _sum_notes(notes) if notes else None
    _pace(report, ledger)
    return report


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


def _counted(batch: OpenBatch) -> StatusReport:
    """The figures every status has: the batch's one count of jobs, and what the records of
    its jobs say (failures by reason, sizes other than asked)."""
    ledger = batch.ledger
    assert ledger is not None
    jobs = batch.counts(check_files=True)  # marks the manifest's records seen, with a manifest
    by_state: Counter[str] = Counter()
    failed: list[tuple[str, JobRecord]] = []
    mismatched = 0  # done at a size other than asked
    example: tuple[str, JobRecord] | None = None
    seen = batch.manifest is not None
    # the records of jobs the batch still has; a packed job is done at the size asked
    # (storage/rows.py), counted without reading it
    mine = by_state[JobState.DONE] = ledger.records.packed(seen=True if seen else None,
                                                           gone=None if seen else False)
    for job_id, rec in ledger.records.loose():
        if rec.seen if seen else not rec.gone:
            state = rec.state
            by_state[state] += 1
            mine += 1
            if state is JobState.FAILED:
                failed.append((job_id, rec))
            elif state is JobState.DONE and type(rec.info) is dict and rec.size_got:
                mismatched += 1  # (only a dict of rarer fields holds a size)
                example = example or (job_id, rec)
    by_state[JobState.PENDING] += max(0, jobs.planned - mine)
    report = StatusReport(
        batch=batch.batch, folder=batch.folder, planned=jobs.planned,
        counts={state: by_state.get(state, 0) for state in STATES}, done=jobs.done,
        failed=jobs.failed, at_provider=jobs.at_provider, pending=jobs.pending,
        tasks_created=ledger.stats.tasks_created + ledger.others.tasks_created,
        maybe_duplicated=ledger.stats.maybe_duplicated + ledger.others.maybe_duplicated,
        vanished=jobs.vanished, missing=jobs.missing, unreadable_lines=ledger.stats.bad_lines,
        target=ledger.target, last_run=ledger.last_run, planned_known=jobs.planned_known,
        manifest=str(batch.manifest.path) if batch.manifest is not None else (
            ledger.last_run.manifest if ledger.last_run is not None else None))
    report.failures = _failures(failed)
    report.spent, report.max_cost = spent_against_budget(report.tasks_created, batch.manifest, ledger.last_run)
    report.size_mismatched = mismatched
    if example is not None:
        job_id, rec = example
        report.size_example = f"{rec.file or job_id}: {rec.size_got}"
    return report


def _sum_notes(notes: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' live notes as one: tasks in flight, limits, ceilings and rate windows add
    up (each shard holds its share of the account's); a pause or an outage is the longest."""
    total = dict(notes[0])
    for note in notes[1:]:
        for key, value in note.items():
            mine = total.get(key)
            if not _number(value) or not _number(mine):
                continue
            if key in ("in_flight", "limit", "ceiling", "window"):
                total[key] = mine + value
            elif key in ("paused_for", "outage_for"):
                total[key] = max(mine, value)
    total["shards"] = len(notes)
    return total


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pace(report: StatusReport, ledger: Ledger) -> None:
    """Images per minute over the last ten minutes; an ETA only while a run is going."""
    now = time.time()
    recent = [t for t in ledger.stats.recent_done if t >= now - RATE_WINDOW]
    if len(recent) < 2:
        return
    span = max(now - min(recent), 1.0)
    report.rate_per_minute = len(recent) / span * 60
    if not report.running:
        return
    run = report.last_run
    goal = run.goal if run is not None and run.planned == report.planned else report.planned
    left = max(0, goal - report.done - report.failed)
    if left:
        report.eta_seconds = left / (report.rate_per_minute / 60)


def _failures(failed) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for job_id, rec in failed:
        reason = clean_text(str(rec.get("reason", "unknown")), 200)  # a ledger is untrusted text
        key = clean_text(rec.label, 100)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"reason": key, "count": 0, "retryable": bool(rec.get("retryable", True)),
                                   "example_job": clean_text(job_id, 100), "example": reason}
        group["count"] += 1
    return sorted(groups.values(), key=lambda g: -g["count"])
