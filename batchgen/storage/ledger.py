"""The ledger: the single source of truth for a batch's progress, one per batch folder.

Append-only JSON Lines of job state events, replayed on open (last event per job wins, fields
accumulate; unreadable lines are skipped and counted). One JSON library (orjson, several times
faster than the standard one both ways) writes and reads every line, and replay parses each
line whole, so it never depends on the order of keys. Every append goes straight to the OS
with one ``write`` before the caller's next step, so a killed process loses nothing it was
told about; ``sync()`` adds the fsync, batched by the caller. Compaction rewrites the file as
one line per job via a temp file and an atomic rename. One writer at a time, held by a lock.
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
from typing import Any

import orjson

from batchgen._version import __version__
from batchgen.errors import LedgerError, OutputError, UsageError
from batchgen.job import Failed, Failure, Job, JobState
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.record import (JobRecord, LockHolder, compact_event, digest, restore,
                                     spec_of)

__all__ = ["LEDGER_FILE", "LOCK_FILE", "STATES", "JobRecord", "Ledger", "LedgerStats", "LockHolder",
           "read_run_note"]

LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = ".batchgen.lock"
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
                 wall: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self._wall = wall  # the run's clock, so ledger times and sidecar times agree
        self.path = folder / LEDGER_FILE
        self.batch = batch
        self.records: dict[str, JobRecord] = {}
        self.stats = LedgerStats()
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
    def open(cls, folder: Path, batch: str, wall: Callable[[], float] = time.time) -> Ledger:
        """Lock the folder for this process, replay the ledger and get ready to append."""
        return _drain(cls.opening(folder, batch, wall))

    @classmethod
    def opening(cls, folder: Path, batch: str,
                wall: Callable[[], float] = time.time) -> Generator[int, None, Ledger]:
        """``open`` in steps: yields the lines replayed so far every ``REPLAY_STEP`` lines and
        returns the Ledger, so a caller on an event loop lets a Ctrl-C in during the replay of
        a big ledger (closing the generator early releases the lock)."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the batch folder {folder}: {exc.strerror}") from exc
        ledger = cls(folder, batch, wall)
        ledger._lock()
        try:
            with contextlib.suppress(OSError):  # left by a compaction that was cut short
                os.unlink(ledger.path.with_name(LEDGER_FILE + ".tmp"))
            yield from ledger._replay(expect_batch=batch)
            ledger._open_for_append()
        except BaseException:
            ledger.close()
            raise
        return ledger

    @classmethod
    def read(cls, folder: Path) -> Ledger:
        """Replay a ledger without locking or writing (status can look at a running batch)."""
        folder = Path(folder)
        if not (folder / LEDGER_FILE).is_file():
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
        """Who the lock file names (a run that ended empties it); read only, never locks."""
        try:
            text = (Path(folder) / LOCK_FILE).read_bytes()[:200].decode(errors="replace")
        except OSError:
            return None
        words = text.split()
        if len(words) < 2 or words[0] != "pid" or not words[1].isdigit():
            return None
        host = words[3] if len(words) >= 4 and words[2] == "on" else ""
        return LockHolder(int(words[1]), host)

    def _lock(self) -> None:
        import fcntl

        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write in the batch folder {self.folder}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip().split("\n")[0] or "another process"
            os.close(fd)
            raise UsageError(
                f"another batchgen ({holder}) is already running this batch in {self.folder}; "
                f"wait for it to finish or stop it, then run again") from None
        try:
            os.ftruncate(fd, 0)
            holder = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
            if os.pwrite(fd, holder.ljust(RESERVE_BYTES), 0) < RESERVE_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
            raise OutputError.from_os_error(str(path), exc) from exc
        self._lock_fd = fd

    def _replay(self, expect_batch: str | None) -> Generator[int, None, None]:
        if not self.path.exists():
            return
        stats = self.stats
        header_seen = False
        loads = orjson.loads
        with open(self.path, "rb") as fh:
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
                        self._header(event, expect_batch)
                    elif "batchgen_run" in event and self._run(event):
                        pass
                    else:
                        stats.bad_lines += 1
                    continue
                state = event.get("state")
                if state is None and "in_manifest" in event and isinstance(job_id, str):
                    rec = self.records.get(job_id)
                    if rec is not None:
                        rec.gone = not event["in_manifest"]
                    continue
                if not isinstance(job_id, str) or not isinstance(state, str) or state not in _STATE_NAMES:
                    stats.bad_lines += 1
                    continue
                self._apply(job_id, event)
        if not header_seen and self.records and expect_batch is not None:
            # A ledger whose header was lost still belongs here; compaction restores one.
            self.batch = expect_batch

    def _header(self, event: dict[str, Any], expect_batch: str | None) -> None:
        batch = event.get("batch")
        if expect_batch is not None and batch != expect_batch:
            raise LedgerError(
                f"{self.path} belongs to batch {batch!r}, not {expect_batch!r}. Use another output "
                f"folder (--output) for this manifest, or give it the name {batch!r}.")
        self.batch = batch
        created = event.get("created_at")
        if self.created_at is None and isinstance(created, (int, float)):
            self.created_at = float(created)
        counts = event.get("counts")
        if isinstance(counts, dict):
            self.stats.tasks_created += int(counts.get("tasks_created", 0) or 0)
            self.stats.maybe_duplicated += int(counts.get("maybe_duplicated", 0) or 0)
        last = event.get("last_run")
        if isinstance(last, dict):
            self._run(last)
        runs = event.get("runs")
        if isinstance(runs, int) and runs > self.runs:
            self.runs = runs

    def _run(self, event: dict[str, Any]) -> bool:
        run = RunRecord.from_json(event)
        if run is None:
            return False
        self.last_run = run
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

    def _apply(self, job_id: str, event: dict[str, Any]) -> JobRecord:
        """Fold one event into the job's record; the same code serves replay and appends."""
        rec = self.records.get(job_id)
        if rec is None:
            rec = self.records[job_id] = JobRecord()
        state = _STATE_NAMES[event["state"]]
        rec.state = state
        if event.get("compact"):
            return restore(rec, event)
        at = event.get("at")
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
            self.stats.tasks_created += 1
            self.stats.maybe_duplicated += int(event.get("maybe_duplicated", 0) or 0)
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
            if isinstance(at, (int, float)):
                self.stats.recent_done.append(float(at))
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
            self.stats.maybe_duplicated += int(event.get("maybe_duplicated", 0) or 0)
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
             size_got: str | None = None) -> None:
        """The job's files are in place (and on disk): the image's path, bytes and digest, the
        sidecar's bytes (resume checks both sizes) and, when it differs from the request, the
        image's size as received."""
        event: dict[str, Any] = {"job": job_id, "state": "done", "at": self._now(), "file": file,
                                 "bytes": size, "sha256": sha256}
        if sidecar_size:
            event["sidecar_bytes"] = sidecar_size
        if size_got is not None:
            event["size_got"] = size_got
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
        return round(self._wall(), 3)

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
                self._write_event({"job": job_id, "in_manifest": rec.seen})
                rec.gone = not rec.seen
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
        return self.stats.lines > 2 * len(self.records) + 1000 or self.stats.bad_lines > 0

    def compact(self) -> None:
        """Rewrite the ledger as one line per job (temp file + rename: never half-written)."""
        tmp = self.path.with_name(LEDGER_FILE + ".tmp")
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
            _fsync_dir(self.folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError.from_os_error(str(self.path), exc) from exc
        if self._fd is not None:
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.stats.lines = lines
        self.stats.bad_lines = 0
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


def read_run_note(folder: Path) -> dict[str, Any] | None:
    """What a run holding ``folder`` wrote about itself lately, or None when no live run did
    (none running, or a killed run's leftover: its process is gone or the note is stale)."""
    try:
        with open(Path(folder) / LOCK_FILE, "rb") as fh:
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
