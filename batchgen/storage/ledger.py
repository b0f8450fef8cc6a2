"""The ledger: the single source of truth for a batch's progress, one per batch folder.

Append-only JSON Lines of job state events, replayed on open (last event per job wins, fields
accumulate; unreadable lines are skipped and counted). One JSON library (orjson, several times
faster than the standard one both ways) writes and reads every line, and replay parses each
line whole, so it never depends on the order of keys. Every append goes straight to the OS
with one ``write`` before the caller's next step, so a killed process loses nothing it was
told about; ``sync()`` adds the fsync, batched by the caller. Compaction rewrites the file as
one line per job via a temp file and an atomic rename. One writer at a time, held by a lock.

A folder run in shards has one ledger per shard (``ledgers/shard-I-of-N.jsonl``, each with its
own lock) beside the folder's own ``ledger.jsonl``, so N processes on N machines never share a
file. Every ledger of a folder is read as one: where two know the same job, the record whose
latest event is later wins. Event times come from a clock that never goes back behind any time
already in the folder's ledgers (a hybrid logical clock), so a run that takes over another's
job always writes the later time, even on a machine whose clock is behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from batchgen._version import __version__
from batchgen.errors import LedgerError, OutputError, UsageError
from batchgen.job import Failed, Failure, Job, JobState
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.record import (JobRecord, LockHolder, compact_event, digest, restore,
                                     spec_of)

__all__ = ["LEDGERS_DIR", "LEDGER_FILE", "MIRROR_DIR", "LOCK_FILE", "STATES", "JobRecord", "Ledger", "LedgerStats",
           "LockHolder", "ShardPart", "fetched_copies", "has_ledger", "ledger_files", "lock_files", "read_holder",
           "shard_stem",
           "read_run_note", "read_run_notes"]

T = TypeVar("T")

LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = ".batchgen.lock"
LEDGERS_DIR = "ledgers"  # one ledger and one lock per shard: shard-I-of-N.jsonl, .lock
MIRROR_DIR = ".store"    # in a state folder: an object store's copies of the ledgers
FORMAT = 1
# Disk kept in the lock file while a batch runs, and given back when the disk fills up, so the
# line that met the full disk and the task ids of submits still in flight can be recorded.
RESERVE_BYTES = 64 * 1024
# The head of the lock file: "pid N", then a JSON line of what the run is doing now (its
# limits), rewritten in place every second so ``status`` can show a running batch's pace.
NOTE_BYTES = 1024
NOTE_STALE = 30.0
STATES = tuple(state.value for state in JobState)
#: Lines replayed between two yields of ``Ledger.opening``: an event loop stays responsive.
REPLAY_STEP = 65536
OUTSTANDING = frozenset(state for state in JobState if state.outstanding)
_STATE_NAMES = {state.value: state for state in JobState}  # replayed states are JobState members


class ShardPart(Protocol):
    """The shard a ledger is written for (``batchgen.manifest.shards.Shard`` is one)."""

    index: int
    count: int

    def holds(self, job_id: str) -> bool: ...


def shard_stem(shard: ShardPart) -> str:
    """``shard-I-of-N``: the name of a shard's ledger, lock and temp folder."""
    return f"shard-{shard.index}-of-{shard.count}"


def ledger_files(folder: Path) -> list[Path]:
    """Every ledger of a batch folder: its own, then one per shard, in name order."""
    folder = Path(folder)
    found = [folder / LEDGER_FILE] if (folder / LEDGER_FILE).is_file() else []
    shards = folder / LEDGERS_DIR
    if shards.is_dir():
        found.extend(sorted(shards.glob("shard-*-of-*.jsonl")))
    return found


def fetched_copies(folder: Path) -> dict[str, Path]:
    """The object store's copies of a state folder's ledgers, as its last run fetched them
    (``.store/``), by their path in the folder."""
    base = Path(folder) / MIRROR_DIR
    if not base.is_dir():
        return {}
    return {path.relative_to(base).as_posix(): path for path in ledger_files(base)}


def has_ledger(folder: Path) -> bool:
    """True when the folder holds a batch's ledger (its own, a shard's, or an object store's
    copies fetched into it)."""
    return bool(ledger_files(folder)) or bool(fetched_copies(folder))


def lock_files(folder: Path) -> list[tuple[str | None, Path]]:
    """Every lock file of a batch folder: (None, the folder's own), then ("I/N", a shard's)."""
    folder = Path(folder)
    found: list[tuple[str | None, Path]] = [(None, folder / LOCK_FILE)]
    shards = folder / LEDGERS_DIR
    if shards.is_dir():
        for path in sorted(shards.glob("shard-*-of-*.lock")):
            parts = path.stem.split("-")
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
                found.append((f"{parts[1]}/{parts[3]}", path))
    return found


@dataclass
class LedgerStats:
    """Counts gathered while replaying and appending, for status and the run summary."""

    lines: int = 0
    bad_lines: int = 0
    tasks_created: int = 0
    maybe_duplicated: int = 0
    recent_done: deque[float] = field(default_factory=lambda: deque(maxlen=2000))


class Ledger:
    """A batch folder's ledger. ``Ledger.open`` for a run (locks), ``Ledger.read`` to look."""

    def __init__(self, folder: Path, batch: str | None,
                 wall: Callable[[], float] = time.time, shard: ShardPart | None = None) -> None:
        self.folder = folder
        self._wall = wall  # the run's clock, so ledger times and sidecar times agree
        self.shard = shard if shard is not None and shard.count > 1 else None
        if self.shard is None:
            self.path = folder / LEDGER_FILE
            self.lock_path = folder / LOCK_FILE
        else:
            self.path = folder / LEDGERS_DIR / f"{shard_stem(self.shard)}.jsonl"
            self.lock_path = folder / LEDGERS_DIR / f"{shard_stem(self.shard)}.lock"
        #: an object store's copies of the batch's ledgers, fetched into the folder's
        #: ``.store/`` (a state folder's), by their path in the folder: read as more ledgers
        self.mirrors = fetched_copies(folder)
        self.batch = batch
        self.records: dict[str, JobRecord] = {}
        self.stats = LedgerStats()  # this ledger file's (a reader's: every ledger's together)
        self.others = LedgerStats()  # what the folder's other ledgers counted (a writer's view)
        self._floor = 0.0  # the latest event time in any of the folder's ledgers
        self._writing = False
        self._shared_fd: int | None = None  # a shard's shared hold on the folder's own lock
        self._file_run: RunRecord | None = None  # the latest run of the file being replayed
        #: a store's copy of this very ledger held records the local file lacked: compact, so
        #: the file holds them all before it is copied back
        self.absorbed = False
        self.created_at: float | None = None
        self.last_run: RunRecord | None = None  # the latest run recorded: target, planned jobs
        self.runs = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._dirty = False
        self._broken: OutputError | None = None
        self._full: OutputError | None = None  # the reserve is in use: record, then stop the batch

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, batch: str, wall: Callable[[], float] = time.time,
             shard: ShardPart | None = None) -> Ledger:
        """Lock the folder (or this shard of it) for this process, replay the folder's
        ledgers and get ready to append."""
        return _drain(cls.opening(folder, batch, wall, shard))

    @classmethod
    def opening(cls, folder: Path, batch: str, wall: Callable[[], float] = time.time,
                shard: ShardPart | None = None) -> Generator[int, None, Ledger]:
        """``open`` in steps: yields the lines replayed so far every ``REPLAY_STEP`` lines and
        returns the Ledger, so a caller on an event loop lets a Ctrl-C in during the replay of
        a big ledger (closing the generator early releases the lock).

        With a shard, only that shard's jobs are kept, its own ledger is written, and the
        folder's own lock is held shared: shards of one count run side by side, while a run
        of the whole folder, or of shards of another count, is refused until they end."""
        folder = Path(folder)
        ledger = cls(folder, batch, wall, shard)
        try:
            ledger.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the batch folder {folder}: {exc.strerror}") from exc
        ledger._writing = True
        ledger._lock()
        try:
            with contextlib.suppress(OSError):  # left by a compaction that was cut short
                os.unlink(ledger.path.with_name(ledger.path.name + ".tmp"))
            yield from ledger._replay(expect_batch=batch)
            ledger._open_for_append()
        except BaseException:
            ledger.close()
            raise
        return ledger

    @classmethod
    def read(cls, folder: Path) -> Ledger:
        """Replay every ledger of a folder as one, without locking or writing (status can
        look at a running batch, and at shards running on other machines)."""
        folder = Path(folder)
        if not has_ledger(folder):
            raise UsageError(f"no batch in {folder}: there is no {LEDGER_FILE} there")
        ledger = cls(folder, None)
        _drain(ledger._replay(expect_batch=None))
        if ledger.batch is None and not ledger.records:
            raise UsageError(f"no batch in {folder}: its {LEDGER_FILE} records no batch "
                             f"({ledger.stats.lines} line(s), none readable as a batch's)")
        return ledger

    @property
    def target(self) -> Target | None:
        """What made this folder's images: the target of the latest run (None: not recorded)."""
        return self.last_run.target if self.last_run is not None else None

    @staticmethod
    def lock_holder(folder: Path) -> LockHolder | None:
        """Who the folder's own lock file names (a run that ended empties it); never locks."""
        return read_holder(Path(folder) / LOCK_FILE)

    @staticmethod
    def holders(folder: Path) -> list[tuple[str | None, LockHolder]]:
        """Who each lock file of the folder names: (None or the shard "I/N", holder)."""
        return _per_lock(folder, read_holder)

    def _lock(self) -> None:
        import fcntl

        if self.shard is not None:
            self._hold_folder_shared()
        path = self.lock_path
        try:
            fd, holder = self._flock(path, fcntl.LOCK_EX)
        except OutputError:
            self._release_shared()
            raise
        if fd is None:
            self._release_shared()
            if self.shard is not None:
                raise UsageError(
                    f"shard {self.shard.index}/{self.shard.count} of this batch is already "
                    f"running ({holder or 'another process'}) in {self.folder}; wait for it to "
                    f"finish or stop it, then run again")
            raise UsageError(self._busy_message(holder))
        try:
            os.ftruncate(fd, 0)
            holder = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
            if os.pwrite(fd, holder.ljust(RESERVE_BYTES), 0) < RESERVE_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
            self._release_shared()
            raise OutputError.from_os_error(str(path), exc) from exc
        self._lock_fd = fd
        if self.shard is not None:
            try:
                self._refuse_other_counts()
            except BaseException:
                self.close()
                raise

    def _busy_message(self, holder: str) -> str:
        if holder:
            return (f"another batchgen ({holder}) is already running this batch in {self.folder}; "
                    f"wait for it to finish or stop it, then run again")
        running = [f"{shard} ({h.describe()})" for shard, h in self.holders(self.folder)
                   if shard is not None and h.alive is not False]
        named = ", ".join(running[:4]) + (f" and {len(running) - 4} more" if len(running) > 4 else "")
        return (f"shards of this batch are running in {self.folder}"
                f"{' (' + named + ')' if named else ''}; a run of the whole batch starts once "
                f"every shard has stopped")

    def _hold_folder_shared(self) -> None:
        """A shard holds the folder's own lock shared for as long as it runs: shards run side
        by side, and a run of the whole folder waits for them all."""
        import fcntl

        fd, holder = self._flock(self.folder / LOCK_FILE, fcntl.LOCK_SH)
        if fd is None:
            raise UsageError(
                f"another batchgen ({holder or 'another process'}) is running the whole batch "
                f"in {self.folder}; run the shards once it has stopped")
        self._shared_fd = fd

    def _flock(self, path: Path, mode: int) -> tuple[int | None, str]:
        """(the open file of ``path``, locked with ``mode`` at once, "") or, when another
        process holds it, (None, the holder line it wrote); OutputError if it cannot be opened."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write in the batch folder {self.folder}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip().split("\n")[0]
            os.close(fd)
            return None, holder
        return fd, ""

    def _refuse_other_counts(self) -> None:
        """Shards of another count split the jobs another way, so two processes could take one
        job: a shard of another count that is running stops this one. (This shard's lock is
        held first: of two starting at once, at least one sees the other.)"""
        import fcntl

        assert self.shard is not None
        for shard, path in lock_files(self.folder):
            if shard is None or shard.endswith(f"/{self.shard.count}"):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(
                    f"shard {shard} of this batch is running in {self.folder}: shards that run "
                    f"at the same time must all split the batch the same way (--shard "
                    f"I/{shard.split('/')[1]}, not I/{self.shard.count})") from None
            finally:
                os.close(fd)

    def _release_shared(self) -> None:
        if self._shared_fd is not None:
            os.close(self._shared_fd)
            self._shared_fd = None

    def _replay(self, expect_batch: str | None) -> Generator[int, None, None]:
        """Replay this ledger, then the folder's others and any mirrors, merged by time.

        A writer keeps only its shard's jobs, and counts the others' tasks apart (its own
        header counts only its own); a reader counts every ledger's. A mirror's copy of a
        ledger the folder also holds adds its records (the later wins) but not its counts."""
        own_existed = self.path.is_file()
        yield from self._replay_file(self.path, self.records, self.stats, expect_batch, own=True)
        counted = {self.path}
        elsewhere = self.others if self._writing else self.stats
        sources: list[tuple[Path, LedgerStats]] = [(p, elsewhere) for p in ledger_files(self.folder)
                                                   if p != self.path]
        own = self.path.relative_to(self.folder).as_posix()
        for relative, copy in sorted(self.mirrors.items()):
            if relative == own:
                if own_existed and _is_prefix(copy, self.path):
                    continue  # what this machine copied there itself: nothing new
                # Another machine wrote this ledger last (or this one never had it): merged
                # in, and the ledger rewritten whole before it is copied back.
                self.absorbed = True
                sources.append((copy, self.stats if not own_existed else LedgerStats()))
            else:
                counts = (self.folder / relative).is_file()  # the folder's own file counted it
                sources.append((copy, LedgerStats() if counts else elsewhere))
        for path, into in sources:
            if path in counted:
                continue
            counted.add(path)
            part: dict[str, JobRecord] = {}
            yield from self._replay_file(path, part, into, expect_batch, own=False)
            self._merge(part)

    def _merge(self, part: dict[str, JobRecord]) -> None:
        records = self.records
        holds = self.shard.holds if self.shard is not None else None
        for job_id, rec in part.items():
            if holds is not None and not holds(job_id):
                continue
            mine = records.get(job_id)
            if mine is None or rec.at > mine.at:
                records[job_id] = rec
    def _replay_file(self, path: Path, records: dict[str, JobRecord], stats: LedgerStats,
                     expect_batch: str | None, own: bool) -> Generator[int, None, None]:
        try:
            fh = open(path, "rb")
        except FileNotFoundError:  # not there (yet), or a store copy removed by a fetch
            return
        self._file_run = None
        header_seen = False
        loads = orjson.loads
        with fh:
            for raw in fh:
                stats.lines += 1
                if not stats.lines % REPLAY_STEP:
                    yield stats.lines
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
                if not isinstance(job_id, str) or not isinstance(state, str) or state not in _STATE_NAMES:
                    stats.bad_lines += 1
                    continue
                self._apply(job_id, event, records, stats)
        run = self._file_run
        if run is not None and (self.last_run is None or own or run.at > self.last_run.at):
            self.last_run = run  # across ledgers, the latest run by time
        if own and not header_seen and records and expect_batch is not None:
            # A ledger whose header was lost still belongs here; compaction restores one.
            self.batch = expect_batch

    def _header(self, event: dict[str, Any], expect_batch: str | None, stats: LedgerStats,
                own: bool, path: Path) -> None:
        batch = event.get("batch")
        if expect_batch is not None and batch != expect_batch:
            raise LedgerError(
                f"{path} belongs to batch {batch!r}, not {expect_batch!r}. Use another output "
                f"folder (--output) for this manifest, or give it the name {batch!r}.")
        if self.batch is None or own:
            self.batch = batch
        created = event.get("created_at")
        if isinstance(created, (int, float)) and (self.created_at is None or created < self.created_at):
            self.created_at = float(created)
        counts = event.get("counts")
        if isinstance(counts, dict):
            stats.tasks_created += int(counts.get("tasks_created", 0) or 0)
            stats.maybe_duplicated += int(counts.get("maybe_duplicated", 0) or 0)
        last = event.get("last_run")
        if isinstance(last, dict):
            self._run(last, own)
        runs = event.get("runs")
        if own and isinstance(runs, int) and runs > self.runs:
            self.runs = runs

    def _run(self, event: dict[str, Any], own: bool = True) -> bool:
        """A run record: the latest of every ledger's is the folder's last run."""
        run = RunRecord.from_json(event)
        if run is None:
            return False
        self._file_run = run  # in one file, the last line is the latest run
        if run.at > self._floor:
            self._floor = run.at
        if own:
            self.runs += 1
        return True

    def _open_for_append(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            if size:
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":  # a torn last line: keep it apart from what follows
                        self._write(b"\n")
            else:
                self.created_at = self._wall()
                self._write_event({"batchgen_ledger": FORMAT, "batch": self.batch,
                                   "created_at": round(self.created_at, 3), "version": __version__})
        except OSError as exc:
            raise OutputError(f"cannot write the ledger {self.path}: {exc.strerror}") from exc

    # -- state ------------------------------------------------------------------------------

    def _apply(self, job_id: str, event: dict[str, Any], records: dict[str, JobRecord] | None = None,
               stats: LedgerStats | None = None) -> JobRecord:
        """Fold one event into the job's record; the same code serves replay and appends
        (``records`` and ``stats``: another ledger's, while it is replayed to be merged)."""
        if records is None:
            records = self.records
        if stats is None:
            stats = self.stats
        rec = records.get(job_id)
        if rec is None:
            rec = records[job_id] = JobRecord()
        state = _STATE_NAMES[event["state"]]
        rec.state = state
        at = event.get("at")
        if isinstance(at, (int, float)):
            rec.at = at
            if at > self._floor:
                self._floor = at
        if event.get("compact"):
            return restore(rec, event)
        if state == "submitting":
            rec.task_id = None
            rec.info = {"spec": event.get("spec"), "submitting_at": at}
        elif state == "submitted":
            rec.task_id = event.get("task_id")
            if event.get("again"):  # an old task followed once more, not a new one
                info = rec.info or {}
                spec = event.get("spec") or info.get("spec")
                rec.info = {"spec": spec, "submitted_at": event.get("submitted_at",
                                                                   info.get("submitted_at"))}
                return rec
            stats.tasks_created += 1
            stats.maybe_duplicated += int(event.get("maybe_duplicated", 0) or 0)
            rec._set("submitted_at", at)
        elif state == "generated":
            pass  # the seed and time are in the event for people; the sidecar has them too
        elif state == "done":
            rec.file = event.get("file")
            rec.size = int(event.get("bytes", 0) or 0)
            rec.side = int(event.get("sidecar_bytes", 0) or 0)
            rec.sha256 = digest(event.get("sha256"))
            got = event.get("size_got")
            rec.info = {"size_got": got} if isinstance(got, str) else None
            derived = event.get("derived")
            if isinstance(derived, str):
                rec.info = {**(rec.info or {}), "derived": derived}
            if isinstance(at, (int, float)):
                stats.recent_done.append(float(at))
        elif state == "failed":
            spec = rec.get("spec")  # kept: a later retry or collect may need the job as sent
            reason = str(event.get("reason", "unknown"))
            code = event.get("code")
            label = event.get("label")
            if not isinstance(code, str):  # a ledger from before codes were recorded
                label = reason.split(":", 1)[0]
                code = Failure.from_code(label).code
            submitted_at = rec.get("submitted_at")  # a timed-out task's age: retry polls it once
            rec.info = {"reason": reason, "code": code, "label": label or code,
                        "retryable": bool(event.get("retryable", True)), "failed_at": at}
            if spec is not None:
                rec.info["spec"] = spec
            if submitted_at is not None:
                rec.info["submitted_at"] = submitted_at
            if event.get("task_id"):
                rec.task_id = event["task_id"]
            stats.maybe_duplicated += int(event.get("maybe_duplicated", 0) or 0)
        else:  # pending: put back to be submitted afresh
            rec.task_id = None
            rec.file = None
            rec.size = 0
            rec.side = 0
            rec.sha256 = None
            rec.info = None
        return rec

    def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    def counts(self) -> Counter[str]:
        return Counter(rec.state for rec in self.records.values())

    def outstanding(self) -> list[tuple[str, JobRecord]]:
        """Jobs whose task is out at the provider, oldest submit first (their URLs expire first)."""
        found = [(job_id, rec) for job_id, rec in self.records.items() if rec.state in OUTSTANDING]
        found.sort(key=lambda item: item[1].get("submitted_at") or 0.0)
        return found

    def failures(self) -> Iterator[tuple[str, JobRecord]]:
        return ((job_id, rec) for job_id, rec in self.records.items() if rec.state == "failed")

    # -- appending --------------------------------------------------------------------------

    def submitting(self, job: Job) -> None:
        """Recorded before the POST: a crash after it shows the task may exist at the provider."""
        self._record({"job": job.job_id, "state": "submitting", "at": self._now(),
                      "spec": spec_of(job)}).seen = True  # only the manifest's jobs are submitted

    def submitted(self, job_id: str, task_id: str, attempts: int = 1, maybe_duplicated: int = 0) -> None:
        event: dict[str, Any] = {"job": job_id, "state": "submitted", "at": self._now(), "task_id": task_id}
        if attempts > 1:
            event["attempts"] = attempts
        if maybe_duplicated:
            event["maybe_duplicated"] = maybe_duplicated
        self._record(event)

    def follow_again(self, job_id: str, task_id: str, job: Job | None = None,
                     submitted_at: float | None = None) -> None:
        """Follow a job's existing task once more (a timed-out task may have finished; a done
        job's files went missing). ``job`` keeps its spec, so the job can be redone should the
        provider have forgotten the task; ``submitted_at`` (wall time) is the task's age when
        the ledger did not keep it."""
        event: dict[str, Any] = {"job": job_id, "state": "submitted", "at": self._now(),
                                 "task_id": task_id, "again": True}
        if job is not None:
            event["spec"] = spec_of(job)
        if submitted_at is not None:
            event["submitted_at"] = round(submitted_at, 3)
        self._record(event)

    def generated(self, job_id: str, seed: int | None) -> None:
        self._record({"job": job_id, "state": "generated", "at": self._now(), "seed": seed})

    def done(self, job_id: str, file: str, size: int, sha256: str, sidecar_size: int = 0,
             size_got: str | None = None, derived: str | None = None) -> None:
        """The job's files are in place (and on disk): the image's path, bytes and digest, the
        sidecar's bytes (resume checks both sizes), when it differs from the request, the
        image's size as received, and the digest its caption and sidecar fields were written
        from (storage/derived.py)."""
        event: dict[str, Any] = {"job": job_id, "state": "done", "at": self._now(), "file": file,
                                 "bytes": size, "sha256": sha256}
        if sidecar_size:
            event["sidecar_bytes"] = sidecar_size
        if size_got is not None:
            event["size_got"] = size_got
        if derived is not None:
            event["derived"] = derived
        self._record(event)

    def failed(self, job_id: str, failed: Failed, task_id: str | None = None,
               maybe_duplicated: int = 0) -> None:
        event: dict[str, Any] = {"job": job_id, "state": "failed", "at": self._now(),
                                 "code": failed.failure.code, "reason": failed.reason,
                                 "retryable": failed.failure.retryable}
        if failed.label != failed.failure.code:
            event["label"] = failed.label
        if task_id:
            event["task_id"] = task_id
        if maybe_duplicated:
            event["maybe_duplicated"] = maybe_duplicated
        self._record(event)

    def reset(self, job_id: str) -> None:
        """Put a job back to pending (retry, or its files went missing and it has no task)."""
        self._record({"job": job_id, "state": "pending", "at": self._now()})

    def _now(self) -> float:
        """The time of an event written now: never behind any time already in the folder's
        ledgers, so a record written here is later than every copy it takes over."""
        now = round(self._wall(), 3)
        if now <= self._floor:
            now = round(self._floor + 0.001, 3)
        self._floor = now
        return now

    def record_run(self, run: RunRecord) -> None:
        """A run starts: its target, planned jobs and goal (``status`` reads them back)."""
        self._write_event(run.to_json())
        self.last_run = run
        self.runs += 1

    def record_membership(self) -> tuple[int, int]:
        """After a full pass over the manifest (``seen`` set on every job it has), record which
        jobs left it and which came back; returns (vanished, back). Only changes are written."""
        vanished = back = 0
        for job_id, rec in self.records.items():
            if rec.seen == rec.gone:  # seen but recorded gone, or unseen but not recorded gone
                # The whole record, at a new time: the record may be another ledger's (a
                # shard's), and this ledger's copy must be the later one.
                rec.gone = not rec.seen
                rec.at = self._now()
                self._write_event(compact_event(job_id, rec))
                vanished += rec.gone
                back += not rec.gone
        return vanished, back

    def _record(self, event: dict[str, Any]) -> JobRecord:
        self._write_event(event)
        return self._apply(event["job"], event)

    def _write_event(self, event: dict[str, Any]) -> None:
        self._write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        self.stats.lines += 1

    def _write(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        if self._fd is None:
            raise LedgerError("the ledger is closed")
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:
                if exc.errno == errno.ENOSPC and self._full is None and self._free_reserve():
                    self._full = OutputError.from_os_error(str(self.path), exc)
                    continue
                self._broken = OutputError.from_os_error(str(self.path), exc)
                raise self._broken from exc
            view = view[written:]
        self._dirty = True
        if self._full is not None:
            raise self._full  # recorded, but the disk is full: the batch must stop

    def _free_reserve(self) -> bool:
        if self._lock_fd is None:
            return False
        try:
            os.ftruncate(self._lock_fd, 32)
        except OSError:
            return False
        return True

    def sync(self) -> None:
        """fsync what was appended since the last call; cheap when nothing was."""
        if self._dirty and self._fd is not None and self._broken is None:
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._broken = OutputError.from_os_error(str(self.path), exc)
                raise self._broken from exc

    def note_run(self, fields: dict[str, Any]) -> None:
        """Write what the run is doing now into the lock file, for ``status``; best effort."""
        if self._lock_fd is None or self._full is not None:
            return
        pid = os.getpid()
        note = orjson.dumps({"pid": pid, "at": round(self._wall(), 1), **fields})
        data = f"pid {pid} on {socket.gethostname()}\n".encode() + note + b"\n"
        if len(data) > NOTE_BYTES:
            return
        try:
            os.pwrite(self._lock_fd, data.ljust(NOTE_BYTES), 0)
        except OSError:
            pass

    # -- compaction ---------------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        return (self.stats.lines > 2 * len(self.records) + 1000 or self.stats.bad_lines > 0
                or self.absorbed)

    def compact(self) -> None:
        """Rewrite the ledger as one line per job (temp file + rename: never half-written)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        header: dict[str, Any] = {
            "batchgen_ledger": FORMAT, "batch": self.batch,
            "created_at": round(self.created_at or self._wall(), 3), "version": __version__,
            "counts": {"tasks_created": self.stats.tasks_created,
                       "maybe_duplicated": self.stats.maybe_duplicated}}
        if self.last_run is not None:
            header["last_run"] = self.last_run.to_json()
            header["runs"] = self.runs
        dumps = orjson.dumps
        newline = orjson.OPT_APPEND_NEWLINE
        try:
            with open(tmp, "wb") as fh:
                fh.write(dumps(header, option=newline))
                lines = 1
                for job_id, rec in self.records.items():
                    fh.write(dumps(compact_event(job_id, rec), option=newline))
                    lines += 1
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError.from_os_error(str(self.path), exc) from exc
        if self._fd is not None:
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.stats.lines = lines
        self.stats.bad_lines = 0
        self.absorbed = False
        self._dirty = False

    def close(self) -> None:
        """fsync and release the file and the lock; safe to call twice."""
        try:
            if self._fd is not None:
                try:
                    self._dirty = True   # a periodic fsync may still be on its way: one more
                    self.sync()
                except OutputError:
                    pass
                os.close(self._fd)
        finally:
            self._fd = None
            if self._lock_fd is not None:
                try:
                    os.ftruncate(self._lock_fd, 0)  # give the reserve back
                except OSError:
                    pass
                os.close(self._lock_fd)
                self._lock_fd = None
            self._release_shared()


def read_holder(lock: Path) -> LockHolder | None:
    """Who a lock file names (a run that ended empties it); read only, never locks."""
    try:
        text = Path(lock).read_bytes()[:200].decode(errors="replace")
    except OSError:
        return None
    words = text.split()
    if len(words) < 2 or words[0] != "pid" or not words[1].isdigit():
        return None
    host = words[3] if len(words) >= 4 and words[2] == "on" else ""
    return LockHolder(int(words[1]), host)


def read_run_notes(folder: Path) -> list[tuple[str | None, dict[str, Any]]]:
    """The live notes of every run holding a part of ``folder``: (None or the shard "I/N",
    note), for the whole folder's run or each shard's."""
    return _per_lock(folder, read_run_note)


def _per_lock(folder: Path, read: Callable[[Path], T | None]) -> list[tuple[str | None, T]]:
    """(None or the shard "I/N", what ``read`` finds) for each lock file of the folder that
    has something to read."""
    found = []
    for shard, path in lock_files(folder):
        value = read(path)
        if value is not None:
            found.append((shard, value))
    return found


def read_run_note(folder: Path) -> dict[str, Any] | None:
    """What a run holding ``folder`` (or the lock file given) wrote about itself lately, or
    None when no live run did (none running, or a killed run's leftover: its process is gone
    or the note is stale)."""
    path = Path(folder)
    if path.is_dir():
        path = path / LOCK_FILE
    try:
        with open(path, "rb") as fh:
            head = fh.read(NOTE_BYTES)
    except OSError:
        return None
    lines = head.split(b"\n")
    if len(lines) < 2:
        return None
    try:
        note = orjson.loads(lines[1].strip() or b"null")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(note, dict) or not isinstance(note.get("pid"), int):
        return None
    at = note.get("at")
    if not isinstance(at, (int, float)) or time.time() - at > NOTE_STALE:
        return None
    try:
        os.kill(note["pid"], 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass  # alive, owned by someone else
    return note


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


def _drain(steps: Generator[int, None, Any]) -> Any:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
