"""The ledger: the single source of truth for a batch's progress, one per batch folder.

Append-only JSON Lines of job state events, replayed on open (last event per job wins, fields
accumulate; unreadable lines are skipped and counted). One JSON library (orjson, several times
faster than the standard one both ways) writes and reads every line, and replay parses each
line whole, so it never depends on the order of keys. Every append goes straight to the OS
with one ``write`` before the caller's next step, so a killed process loses nothing it was
told about; ``sync()`` adds the fsync, batched by the caller. Compaction rewrites the file as
block lines of many jobs each via a temp file and an atomic rename: when a run opens the
folder and ends, and while it goes, every ``CHECKPOINT_LINES`` appended lines, so the ledger a
crash leaves is mostly compacted and replays about as fast as a finished one. One writer at a
time, held by a lock.

A folder run in shards has one ledger per shard (``ledgers/shard-I-of-N.jsonl``, each with its
own lock) beside the folder's own ``ledger.jsonl``, so N processes on N machines never share a
file. Every ledger of a folder is read as one: where two know the same job, the record whose
latest event is later wins. Event times come from a clock that never goes back behind any time
already in the folder's ledgers (a hybrid logical clock), so a run that takes over another's
job always writes the later time, even on a machine whose clock is behind.

Here: appending, folding each event into its job's record, compaction. The lock (with its disk
reserve and run note) is ``lock.py``; reading several ledgers as one is ``replay.py``; the
names of a folder's ledgers and locks are ``layout.py``. Their public names are re-exported.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from batchgen._version import __version__
from batchgen.errors import LedgerError, OutputError, UsageError
from batchgen.job import Failed, Failure, Job, JobState
from batchgen.steps import drain
from batchgen.safetext import clean_text
from batchgen.storage.guard import NOFOLLOW
from batchgen.storage.identity import RunRecord, Target
from batchgen.storage.layout import (LEDGER_FILE, LEDGERS_DIR, LOCK_FILE, MIRROR_DIR, ShardPart,
                                     fetched_copies, has_ledger, ledger_files, lock_files,
                                     shard_stem)
from batchgen.storage.lock import (RESERVE_BYTES, FolderLock, read_holder, read_holders,
                                   read_run_note, read_run_notes)
from batchgen.storage.record import JobRecord, LockHolder, compact_event, digest, restore, spec_of
from batchgen.storage.replay import (BATCH_KEY, FORMAT, MAX_LINE, REPLAY_STEP, STATE_NAMES,
                                     LedgerStats, Replay)
from batchgen.storage.rows import Block, Records, blocks

__all__ = ["LEDGERS_DIR", "LEDGER_FILE", "LOCK_FILE", "MIRROR_DIR", "REPLAY_STEP", "RESERVE_BYTES",
           "STATES", "JobRecord", "Ledger", "LedgerStats", "LockHolder", "ShardPart",
           "fetched_copies", "has_ledger", "ledger_files", "lock_files", "read_holder",
           "read_run_note", "read_run_notes", "shard_stem"]

STATES = tuple(state.value for state in JobState)
# A run compacts its ledger after this many appended lines (about 33,000 jobs at four lines
# each), or an eighth of its jobs' count if more: the lines a crash leaves uncompacted then
# replay in half a second, and at 10^6 jobs the compactions cost about 8 s of CPU in all.
CHECKPOINT_LINES = 1 << 17
log = logging.getLogger(__name__)
OUTSTANDING = frozenset(state for state in JobState if state.outstanding)
SUBMITTING, SUBMITTED, GENERATED, DONE = (JobState.SUBMITTING, JobState.SUBMITTED, JobState.GENERATED,
                                          JobState.DONE)


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
        self.records = Records()
        self.stats = LedgerStats()  # this ledger file's (a reader's: every ledger's together)
        self.others = LedgerStats()  # what the folder's other ledgers counted (a writer's view)
        self.floor = 0.0  # the latest event time in any of the folder's ledgers
        self.writing = False  # opened to append (a reader counts every ledger as its own)
        #: a store's copy of this very ledger held records the local file lacked: compact, so
        #: the file holds them all before it is copied back
        self.absorbed = False
        self.created_at: float | None = None
        self.last_run: RunRecord | None = None  # the latest run recorded: target, planned jobs
        self.runs = 0
        self._fd: int | None = None
        # Held while the file descriptor is fsynced (the commit worker's thread) or swapped for
        # the compacted file's (the loop), so an fsync never meets a closed descriptor.
        self._fd_lock = threading.Lock()
        self.checkpoint_lines = CHECKPOINT_LINES
        self._compacted_at = 0  # stats.lines when the file was last compacted (or opened)
        # The blocks of packed jobs the file's last compaction wrote (this process's), whose
        # lines the next one copies while no job in them changed, and that file's identity.
        self._written: list[Block | None] = []
        self._written_file: tuple[int, int] | None = None
        self._lock = FolderLock(folder, self.lock_path, self.shard)
        self._dirty = False
        self._broken: OutputError | None = None
        self._full: OutputError | None = None  # the reserve is in use: record, then stop the batch

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, batch: str, wall: Callable[[], float] = time.time,
             shard: ShardPart | None = None) -> Ledger:
        """Lock the folder (or this shard of it) for this process, replay the folder's
        ledgers and get ready to append."""
        return drain(cls.opening(folder, batch, wall, shard))

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
        ledger.writing = True
        ledger._lock.acquire()
        try:
            with contextlib.suppress(OSError):  # left by a compaction that was cut short
                os.unlink(ledger.path.with_name(ledger.path.name + ".tmp"))
            yield from Replay(ledger).replay(expect_batch=batch)
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
        drain(Replay(ledger).replay(expect_batch=None))
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
        return read_holders(folder)

    # -- appending --------------------------------------------------------------------------

    def _open_for_append(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
            size = os.fstat(self._fd).st_size
            if size:
                with open(self.path, "rb") as fh:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":  # a torn last line: keep it apart from what follows
                        self._write(b"\n")
            else:
                self.created_at = self._wall()
                self._write_event({"batchgen_ledger": FORMAT, BATCH_KEY: self.batch,
                                   "created_at": round(self.created_at, 3), "version": __version__})
        except OSError as exc:
            raise OutputError(f"cannot write the ledger {self.path}: {exc.strerror}") from exc
        self._next_checkpoint()

    # -- state ------------------------------------------------------------------------------

    def fold(self, job_id: str, event: dict[str, Any], records: Records | None = None,
               stats: LedgerStats | None = None) -> JobRecord:
        """Fold one event into the job's record; the same code serves replay and appends
        (``records`` and ``stats``: another ledger's, while it is replayed to be merged)."""
        if records is None:
            records = self.records
        if stats is None:
            stats = self.stats
        rec = records.record(job_id)
        state = STATE_NAMES[event["state"]]
        rec.state = state
        get = event.get
        at = get("at")
        if type(at) is float or isinstance(at, (int, float)):
            rec.at = at
            if at > self.floor:
                self.floor = at
        if get("compact"):
            return restore(rec, event)
        if state is SUBMITTING:
            rec.task_id = None
            rec.info = {"spec": get("spec"), "submitting_at": at}
        elif state is SUBMITTED:
            rec.task_id = get("task_id")
            if get("again"):  # an old task followed once more, not a new one
                info = rec.details() or {}
                spec = get("spec") or info.get("spec")
                rec.info = {"spec": spec, "submitted_at": get("submitted_at",
                                                             info.get("submitted_at"))}
                return rec
            stats.tasks_created += 1
            duplicated = get("maybe_duplicated")
            if duplicated:
                stats.maybe_duplicated += int(duplicated)
            rec._set("submitted_at", at)
        elif state is GENERATED:
            pass  # the seed and time are in the event for people; the sidecar has them too
        elif state is DONE:
            rec.file = get("file")
            rec.size = int(get("bytes", 0) or 0)
            rec.side = int(get("sidecar_bytes", 0) or 0)
            rec.sha256 = digest(get("sha256"))
            got = get("size_got")
            derived = get("derived")
            if isinstance(got, str):
                rec.info = {"size_got": got, "derived": derived} if isinstance(derived, str) \
                    else {"size_got": got}
            else:  # the digest alone, held as its text (record.py)
                rec.info = derived if isinstance(derived, str) else None
            if type(at) is float or isinstance(at, (int, float)):
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

    def note_time(self, at: float) -> None:
        """An event of this time was replayed: the clock floor never goes behind it."""
        if at > self.floor:
            self.floor = at

    def get(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    def counts(self) -> Counter[str]:
        return Counter(rec.state for rec in self.records.values())

    def outstanding(self) -> list[tuple[str, JobRecord]]:
        """Jobs whose task is out at the provider, oldest submit first (their URLs expire first)."""
        found = [(job_id, rec) for job_id, rec in self.records.loose() if rec.state in OUTSTANDING]
        found.sort(key=lambda item: item[1].get("submitted_at") or 0.0)
        return found

    def failures(self) -> Iterator[tuple[str, JobRecord]]:
        return ((job_id, rec) for job_id, rec in self.records.loose() if rec.state == "failed")

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
        self.records.pack_done(job_id)  # done changes no more: a million of them in little memory

    def failed(self, job_id: str, failed: Failed, task_id: str | None = None,
               maybe_duplicated: int = 0) -> None:
        event: dict[str, Any] = {"job": job_id, "state": "failed", "at": self._now(),
                                 "code": failed.failure.code, "reason": clean_text(failed.reason),
                                 "retryable": failed.failure.retryable}
        if failed.label != failed.failure.code:
            event["label"] = clean_text(failed.label, 100)
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
        if now <= self.floor:
            now = round(self.floor + 0.001, 3)
        self.floor = now
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
                rec = self.records[job_id]  # (a packed job's, as a record for good)
                rec.gone = not rec.seen
                rec.at = self._now()
                self._write_event(compact_event(job_id, rec))
                vanished += rec.gone
                back += not rec.gone
        return vanished, back

    def _record(self, event: dict[str, Any]) -> JobRecord:
        self._write_event(event)
        record = self.fold(event["job"], event)
        if self.stats.lines - self._compacted_at >= max(self.checkpoint_lines, len(self.records) >> 3):
            self.checkpoint()   # after the fold: the compacted file holds this event too
        return record

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
                if exc.errno == errno.ENOSPC and self._full is None and self._lock.free_reserve():
                    self._full = OutputError.from_os_error(str(self.path), exc)
                    continue
                self._broken = OutputError.from_os_error(str(self.path), exc)
                raise self._broken from exc
            view = view[written:]
        self._dirty = True
        if self._full is not None:
            raise self._full  # recorded, but the disk is full: the batch must stop


    @property
    def unsynced(self) -> bool:
        """True when something was appended since the last ``sync``."""
        return self._dirty

    def sync(self) -> None:
        """fsync what was appended since the last call; cheap when nothing was."""
        with self._fd_lock:
            if self._dirty and self._fd is not None and self._broken is None:
                self._dirty = False
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self._broken = OutputError.from_os_error(str(self.path), exc)
                    raise self._broken from exc


    def note_run(self, fields: dict[str, Any]) -> None:
        """Write what the run is doing now into the lock file, for ``status``; best effort."""
        if self._full is None:
            self._lock.note(fields, self._wall())

    # -- compaction ---------------------------------------------------------------------------

    def needs_compaction(self) -> bool:
        return (self.stats.lines > 2 * len(self.records) + 1000 or self.stats.bad_lines > 0
                or self.absorbed)

    def checkpoint(self) -> None:
        """Compact in the middle of a run (due every ``checkpoint_lines`` appended). A
        failure (a full disk) costs nothing but the next crash's replay time: it is logged,
        the file stays as it was, and the next try waits as many lines again."""
        try:
            self.compact()
        except OutputError as exc:
            log.warning("the ledger was not compacted (%s); it stays as it is", exc)
            self._next_checkpoint()

    def _next_checkpoint(self) -> None:
        self._compacted_at = self.stats.lines

    def compact(self) -> None:
        """Rewrite the ledger as its header and block lines of up to ``BLOCK_ROWS`` jobs each
        (storage/rows.py), via a temp file and a rename: never half-written. The lines of a
        block of packed jobs none of which changed since this process last compacted the file
        are copied from it, not encoded again: a run's compactions then cost about what the
        jobs that changed in between cost, plus copying the file."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        header: dict[str, Any] = {
            "batchgen_ledger": FORMAT, BATCH_KEY: self.batch,
            "created_at": round(self.created_at or self._wall(), 3), "version": __version__,
            "counts": {"tasks_created": self.stats.tasks_created,
                       "maybe_duplicated": self.stats.maybe_duplicated}}
        if self.last_run is not None:
            header["last_run"] = self.last_run.to_json()
            header["runs"] = self.runs
        dumps = orjson.dumps
        newline = orjson.OPT_APPEND_NEWLINE
        encode = partial(dumps, option=newline)
        written: list[Block | None] = []
        try:
            tmp.unlink(missing_ok=True)
            with open(tmp, "xb") as fh, contextlib.ExitStack() as stack:  # (never through a link)
                now = self._written_by_us(stack)
                old = self._written if now is not None else []
                data = dumps(header, option=newline)
                fh.write(data)
                offset, lines = len(data), 1
                for n, block in enumerate(blocks(self.records)):
                    was = old[n] if n < len(old) else None
                    data = b""
                    if was is not None and now is not None and block.same(was):
                        data = os.pread(now, was.length, was.offset)
                        block.lines = was.lines
                    if len(data) != _length(was):   # changed (or the file is not as written)
                        data = block.encode(encode, MAX_LINE // 4)
                    fh.write(data)
                    lines += block.lines
                    block.offset, block.length = offset, len(data)
                    written.append(block if block.settled else None)
                    offset += len(data)
                fh.flush()
                os.fsync(fh.fileno())
                stat = os.fstat(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):   # (it may not be ours to remove: a directory)
                tmp.unlink(missing_ok=True)
            raise OutputError.from_os_error(str(self.path), exc) from exc
        if self._fd is not None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | NOFOLLOW)
            except OSError as exc:
                self._broken = OutputError.from_os_error(str(self.path), exc)
                raise self._broken from exc
            with self._fd_lock:
                os.close(self._fd)
                self._fd = fd
                self._dirty = False   # the compacted file was fsynced whole
        self._written, self._written_file = written, (stat.st_dev, stat.st_ino)
        self.stats.lines = lines
        self.stats.bad_lines = 0
        self.absorbed = False
        self._next_checkpoint()

    def _written_by_us(self, stack: contextlib.ExitStack) -> int | None:
        """The ledger file opened to read, if it is the very file this process's last
        compaction wrote (not a link, not a file put in its place): only then are the places
        of its blocks known."""
        if not self._written or self._written_file is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | NOFOLLOW)
        except OSError:
            return None
        stack.callback(os.close, fd)
        stat = os.fstat(fd)
        return fd if (stat.st_dev, stat.st_ino) == self._written_file else None

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
            self._lock.release()



def _length(block: Block | None) -> int:
    return -1 if block is None else block.length


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
