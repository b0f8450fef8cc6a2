"""Several ledgers read as one: a folder's own, its shards', an object store's copies.

Each file is read a block at a time and replayed line by line (last event per job wins, fields
accumulate; unreadable lines are skipped and counted) and merged into the Ledger it reads for:
where two ledgers know the same job, the record whose latest event is later wins. Every line is
decoded whole and its fields checked before it is folded, so a torn or planted line is skipped
wherever it is; the replay as first written, one ``readline`` at a time, is kept in the tests
as the reference this one must match on any bytes. Replay is a generator that yields the lines
read so far every ``REPLAY_STEP`` lines, so an event loop stays responsive while a big ledger
is read. Each event is folded by ``Ledger.fold``, the code appends use too.
"""

from __future__ import annotations

import errno
import gc
import os
from collections import deque
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from batchgen._version import __version__
from batchgen.errors import LedgerError
from batchgen.job import JobState
from batchgen.storage.identity import RunRecord
from batchgen.storage.layout import ledger_files
from batchgen.storage.guard import LINK_NOTE, NOFOLLOW
from batchgen.storage.record import sound_event
from batchgen.storage.rows import ROWS_KEY, Records, take_block

if TYPE_CHECKING:
    from batchgen.storage.ledger import Ledger

__all__ = ["BATCH_KEY", "FORMAT", "REPLAY_STEP", "STATE_NAMES", "LedgerStats", "Replay"]

#: The ledger format this batchgen writes and reads: 2 added the block lines of a compacted
#: ledger (storage/rows.py). A ledger whose header names a later format is refused, untouched:
#: its lines would look unreadable here, and a compaction would drop them.
FORMAT = 2
#: Where a header of format 2 names its batch. A batchgen before it reads ``batch``, finds none
#: and refuses the folder (a run: "belongs to batch None"; status: "records no batch") rather
#: than take the block lines for unreadable ones, which its compaction would drop.
BATCH_KEY = "batch_name"
#: Lines replayed between two yields of ``Ledger.opening``: an event loop stays responsive.
REPLAY_STEP = 65536
#: the longest ledger line replayed (bytes); batchgen's own are far shorter (prompts are capped)
MAX_LINE = 1 << 20
#: bytes read at once: lines are split and decoded a block at a time
BLOCK = 1 << 20
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
            part = Records()
            yield from self.replay_file(path, part, into, expect_batch, own=False)
            ledger.records.take_newer(part, ledger.shard.holds if ledger.shard is not None else None)

    def replay_file(self, path: Path, records: Records, stats: LedgerStats,
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
        step = REPLAY_STEP
        with fh:
            for lines in read_lines(fh):
                while lines:  # in parts that end where a step ends: yield there
                    room = step - stats.lines % step
                    part, lines = (lines, []) if len(lines) < room else (lines[:room], lines[room:])
                    with _no_collection():
                        header_seen |= self._events(part, records, stats, expect_batch, own, path)
                    if not stats.lines % step:
                        yield stats.lines
        run = self._file_run
        if run is not None and (ledger.last_run is None or own or run.at > ledger.last_run.at):
            ledger.last_run = run  # across ledgers, the latest run by time
        if own and not header_seen and records and expect_batch is not None:
            # A ledger whose header was lost still belongs here; compaction restores one.
            ledger.batch = expect_batch

    def _events(self, lines: list[bytes | None], records: Records, stats: LedgerStats,
                expect_batch: str | None, own: bool, path: Path) -> bool:
        """Replay these lines (None: one too long to read) into ``records``; True if one
        was the ledger's header. Every line is decoded whole (orjson: a torn or hostile line
        is skipped and counted), its fields checked, then folded."""
        fold = self.ledger.fold
        loads = orjson.loads
        invalid = orjson.JSONDecodeError
        names = STATE_NAMES
        sound = sound_event
        header_seen = False
        bad = 0
        finished: list[str] = []
        stats.lines += len(lines)
        for raw in lines:
            if raw is None:
                bad += 1
                continue
            try:
                event = loads(raw)
            except invalid:
                bad += 1
                continue
            if type(event) is not dict:  # (orjson makes plain dicts and strs only)
                bad += 1
                continue
            job_id = event.get("job")
            if job_id is None:
                if "batchgen_ledger" in event:
                    header_seen = True
                    self._header(event, expect_batch, stats, own, path)
                elif "batchgen_run" in event and self._run(event, own):
                    pass
                else:
                    bad += 1
                continue
            state = event.get("state")
            if type(job_id) is not str or type(state) is not str or state not in names:
                if state is None and "in_manifest" in event and type(job_id) is str:
                    rec = records.get(job_id)
                    if rec is not None:
                        rec.gone = not event["in_manifest"]
                elif ROWS_KEY in event:
                    bad += self._block(event, records, stats)
                else:
                    bad += 1
                continue
            if not sound(event):
                bad += 1
                continue
            fold(job_id, event, records, stats)
            if state == "done":
                finished.append(job_id)
        stats.bad_lines += bad
        if finished:  # a done job changes no more: held packed (storage/rows.py)
            records.pack_finished(finished)
        return header_seen

    def _block(self, event: dict[str, Any], records: Records, stats: LedgerStats) -> int:
        """A block line of a compacted ledger (storage/rows.py); returns its rows (or the
        line) skipped as unreadable. A row that does not pack is checked and folded as the
        compacted line it stands for."""
        ledger = self.ledger
        fold = ledger.fold
        names = STATE_NAMES

        def fold_line(line: dict[str, Any]) -> bool:
            job_id, state = line["job"], line.get("state")
            if type(job_id) is not str or type(state) is not str or state not in names \
                    or not sound_event(line):
                return False
            fold(job_id, line, records, stats)
            return True

        return take_block(event, records, fold_line, ledger.note_time)

    def _header(self, event: dict[str, Any], expect_batch: str | None, stats: LedgerStats,
                own: bool, path: Path) -> None:
        ledger = self.ledger
        written = event.get("batchgen_ledger")
        if type(written) is int and written > FORMAT:
            raise LedgerError(
                f"{path} was written by a later batchgen (ledger format {written}; this one, "
                f"{__version__}, reads formats up to {FORMAT}). Nothing was changed: read and "
                f"run this batch with that batchgen or a later one.")
        batch = event[BATCH_KEY] if BATCH_KEY in event else event.get("batch")
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



@contextmanager
def _no_collection() -> Iterator[None]:
    """The cycle collector paused while lines are folded: replay makes no cycles, and each
    full collection would walk every record made so far (a tenth of a big replay's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_lines(fh: BinaryIO, block: int = BLOCK, limit: int = MAX_LINE) -> Iterator[list[bytes | None]]:
    """The lines of a ledger file, a block's worth at a time, without their newlines; a line
    of ``limit`` bytes or more is None, its bytes skipped unread (replay holds at most a
    block and one such line). The last line counts even without its newline (a torn one)."""
    read = fh.read
    carry = b""
    skipping = False  # inside a line too long to read: dropped up to its newline
    while chunk := read(block):
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            chunk = chunk[cut + 1:]
            skipping = False
        lines = (carry + chunk).split(b"\n") if carry else chunk.split(b"\n")
        carry = lines.pop()
        if lines and max(map(len, lines)) >= limit:
            lines = [None if len(line) >= limit else line for line in lines]
        if len(carry) >= limit:
            lines.append(None)
            carry = b""
            skipping = True
        if lines:
            yield lines
    if carry:
        yield [carry]
