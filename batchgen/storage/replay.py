"""Several ledgers read as one: a folder's own, its shards', an object store's copies.

Each file is replayed line by line (last event per job wins, fields accumulate; unreadable
lines are skipped and counted) and merged into the Ledger it reads for: where two ledgers know
the same job, the record whose latest event is later wins. Replay is a generator that yields
the lines read so far every ``REPLAY_STEP`` lines, so an event loop stays responsive while a
big ledger is read. Each event is folded by ``Ledger.fold``, the code appends use too.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batchgen.errors import LedgerError
from batchgen.job import JobState
from batchgen.storage.identity import RunRecord
from batchgen.storage.layout import ledger_files
from batchgen.storage.guard import LINK_NOTE, NOFOLLOW
from batchgen.storage.record import JobRecord, sound_event

if TYPE_CHECKING:
    from batchgen.storage.ledger import Ledger

__all__ = ["REPLAY_STEP", "STATE_NAMES", "LedgerStats", "Replay"]

#: Lines replayed between two yields of ``Ledger.opening``: an event loop stays responsive.
REPLAY_STEP = 65536
#: the longest ledger line replayed (bytes); batchgen's own are far shorter (prompts are capped)
MAX_LINE = 1 << 20
STATE_NAMES = {state.value: state for state in JobState}  # replayed states are JobState members


@dataclass
class LedgerStats:
    """Counts gathered while replaying and appending, for status and the run summary."""

    lines: int = 0
    bad_lines: int = 0
    tasks_created: int = 0
    maybe_duplicated: int = 0
    recent_done: deque[float] = field(default_factory=lambda: deque(maxlen=2000))


class Replay:
    """Replays a folder's ledgers into ``ledger`` (its records, counts, batch and runs)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._file_run: RunRecord | None = None  # the latest run of the file being replayed

    def replay(self, expect_batch: str | None) -> Generator[int, None, None]:
        """Replay this ledger, then the folder's others and any mirrors, merged by time.

        A writer keeps only its shard's jobs, and counts the others' tasks apart (its own
        header counts only its own); a reader counts every ledger's. A mirror's copy of a
        ledger the folder also holds adds its records (the later wins) but not its counts."""
        ledger = self.ledger
        own_existed = ledger.path.is_file()
        yield from self.replay_file(ledger.path, ledger.records, ledger.stats, expect_batch, own=True)
        counted = {ledger.path}
        elsewhere = ledger.others if ledger.writing else ledger.stats
        sources: list[tuple[Path, LedgerStats]] = [(p, elsewhere) for p in ledger_files(ledger.folder)
                                                   if p != ledger.path]
        own = ledger.path.relative_to(ledger.folder).as_posix()
        for relative, copy in sorted(ledger.mirrors.items()):
            if relative == own:
                if own_existed and _is_prefix(copy, ledger.path):
                    continue  # what this machine copied there itself: nothing new
                # Another machine wrote this ledger last (or this one never had it): merged
                # in, and the ledger rewritten whole before it is copied back.
                ledger.absorbed = True
                sources.append((copy, ledger.stats if not own_existed else LedgerStats()))
            else:
                counts = (ledger.folder / relative).is_file()  # the folder's own file counted it
                sources.append((copy, LedgerStats() if counts else elsewhere))
        for path, into in sources:
            if path in counted:
                continue
            counted.add(path)
            part: dict[str, JobRecord] = {}
            yield from self.replay_file(path, part, into, expect_batch, own=False)
            self._merge(part)

    def _merge(self, part: dict[str, JobRecord]) -> None:
        ledger = self.ledger
        records = ledger.records
        holds = ledger.shard.holds if ledger.shard is not None else None
        for job_id, rec in part.items():
            if holds is not None and not holds(job_id):
                continue
            mine = records.get(job_id)
            if mine is None or rec.at > mine.at:
                records[job_id] = rec

    def replay_file(self, path: Path, records: dict[str, JobRecord], stats: LedgerStats,
                     expect_batch: str | None, own: bool) -> Generator[int, None, None]:
        ledger = self.ledger
        try:
            fh = open(os.open(path, os.O_RDONLY | NOFOLLOW), "rb")
        except FileNotFoundError:  # not there (yet), or a store copy removed by a fetch
            return
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise LedgerError(f"{path} is a symbolic link{LINK_NOTE}") from None
        self._file_run = None
        header_seen = False
        loads = orjson.loads
        with fh:
            readline = fh.readline
            while raw := readline(MAX_LINE):
                stats.lines += 1
                if not stats.lines % REPLAY_STEP:
                    yield stats.lines
                if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
                    # Longer than any line batchgen writes (a planted 200 MB reason): skipped
                    # unread, so replay holds at most one MAX_LINE in memory.
                    while (rest := readline(MAX_LINE)) and not rest.endswith(b"\n"):
                        pass
                    stats.bad_lines += 1
                    continue
                try:
                    event = loads(raw)
                except orjson.JSONDecodeError:
                    stats.bad_lines += 1
                    continue
                if not isinstance(event, dict):
                    stats.bad_lines += 1
                    continue
                job_id = event.get("job")
                if job_id is None:
                    if "batchgen_ledger" in event:
                        header_seen = True
                        self._header(event, expect_batch, stats, own, path)
                    elif "batchgen_run" in event and self._run(event, own):
                        pass
                    else:
                        stats.bad_lines += 1
                    continue
                state = event.get("state")
                if state is None and "in_manifest" in event and isinstance(job_id, str):
                    rec = records.get(job_id)
                    if rec is not None:
                        rec.gone = not event["in_manifest"]
                    continue
                if not isinstance(job_id, str) or not isinstance(state, str) \
                        or state not in STATE_NAMES or not sound_event(event):
                    stats.bad_lines += 1
                    continue
                ledger.fold(job_id, event, records, stats)
        run = self._file_run
        if run is not None and (ledger.last_run is None or own or run.at > ledger.last_run.at):
            ledger.last_run = run  # across ledgers, the latest run by time
        if own and not header_seen and records and expect_batch is not None:
            # A ledger whose header was lost still belongs here; compaction restores one.
            ledger.batch = expect_batch

    def _header(self, event: dict[str, Any], expect_batch: str | None, stats: LedgerStats,
                own: bool, path: Path) -> None:
        ledger = self.ledger
        batch = event.get("batch")
        if expect_batch is not None and batch != expect_batch:
            raise LedgerError(
                f"{path} belongs to batch {batch!r}, not {expect_batch!r}. Use another output "
                f"folder (--output) for this manifest, or give it the name {batch!r}.")
        if ledger.batch is None or own:
            ledger.batch = batch
        created = event.get("created_at")
        if isinstance(created, (int, float)) and (ledger.created_at is None or created < ledger.created_at):
            ledger.created_at = float(created)
        counts = event.get("counts")
        if isinstance(counts, dict):
            stats.tasks_created += int(counts.get("tasks_created", 0) or 0)
            stats.maybe_duplicated += int(counts.get("maybe_duplicated", 0) or 0)
        last = event.get("last_run")
        if isinstance(last, dict):
            self._run(last, own)
        runs = event.get("runs")
        if own and isinstance(runs, int) and runs > ledger.runs:
            ledger.runs = runs

    def _run(self, event: dict[str, Any], own: bool = True) -> bool:
        """A run record: the latest of every ledger's is the folder's last run."""
        ledger = self.ledger
        run = RunRecord.from_json(event)
        if run is None:
            return False
        self._file_run = run  # in one file, the last line is the latest run
        if run.at > ledger.floor:
            ledger.floor = run.at
        if own:
            ledger.runs += 1
        return True


def _is_prefix(copy: Path, path: Path, tail: int = 4096) -> bool:
    """True when the file at ``copy`` is (by its last ``tail`` bytes) the start of ``path``:
    the copy is an earlier upload of the same file, which has only grown since."""
    try:
        size = copy.stat().st_size
        if size > path.stat().st_size:
            return False
        start = max(0, size - tail)
        with open(copy, "rb") as a, open(path, "rb") as b:
            a.seek(start)
            b.seek(start)
            return a.read(tail) == b.read(size - start)
    except OSError:
        return False

