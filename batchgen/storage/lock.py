"""The lock a run holds on a batch folder, with the disk it keeps in reserve and its run note.

One run writes a folder's ledger at a time: it holds the folder's lock file (``flock``, given
back by the kernel when the process dies, however it dies). A shard's run holds its own lock
and the folder's shared, so shards of one count run side by side and a run of the whole folder
waits for them all. The lock file also keeps ``RESERVE_BYTES`` of disk, given back when the
disk fills up so the ledger can still record what was in flight, and at its head a note of
what the run is doing now (``pid N``, then a JSON line), which ``status`` reads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batchgen.errors import OutputError, UsageError
from batchgen.storage.guard import LINK_NOTE, NOFOLLOW
from batchgen.storage.layout import LOCK_FILE, ShardPart, lock_files
from batchgen.storage.record import LockHolder

__all__ = ["NOTE_BYTES", "NOTE_STALE", "RESERVE_BYTES", "FolderLock", "read_holder", "read_holders",
           "read_run_note", "read_run_notes"]

T = TypeVar("T")

# Disk kept in the lock file while a batch runs, and given back when the disk fills up, so the
# line that met the full disk and the task ids of submits still in flight can be recorded.
RESERVE_BYTES = 64 * 1024
# The head of the lock file: "pid N", then a JSON line of what the run is doing now (its
# limits), rewritten in place every second so ``status`` can show a running batch's pace.
NOTE_BYTES = 1024
NOTE_STALE = 30.0


class FolderLock:
    """The lock file of a folder (``path``: its own, or a shard's under ``ledgers/``), held
    from ``acquire`` until ``release``; ``fd`` is its open file while held."""

    def __init__(self, folder: Path, path: Path, shard: ShardPart | None) -> None:
        self.folder = folder
        self.path = path
        self.shard = shard
        self.fd: int | None = None
        self._shared_fd: int | None = None  # a shard's shared hold on the folder's own lock

    def acquire(self) -> None:
        import fcntl

        if self.shard is not None:
            self._hold_folder_shared()
        path = self.path
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
        self.fd = fd
        if self.shard is not None:
            try:
                self._refuse_other_counts()
            except BaseException:
                self.release()
                raise

    def _busy_message(self, holder: str) -> str:
        if holder:
            return (f"another batchgen ({holder}) is already running this batch in {self.folder}; "
                    f"wait for it to finish or stop it, then run again")
        running = [f"{shard} ({h.describe()})" for shard, h in read_holders(self.folder)
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
            fd = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o644)  # never a planted link
        except OSError as exc:
            raise OutputError(f"cannot write in the batch folder {self.folder}: {exc.strerror}"
                              f"{LINK_NOTE if exc.errno == errno.ELOOP else ''}") from exc
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

    def free_reserve(self) -> bool:
        """Give the reserve back to the disk (it is full): False when there is none to give."""
        if self.fd is None:
            return False
        try:
            os.ftruncate(self.fd, 32)
        except OSError:
            return False
        return True


    def note(self, fields: dict[str, Any], at: float) -> None:
        """Write what the run is doing now into the lock file, for ``status``; best effort."""
        if self.fd is None:
            return
        pid = os.getpid()
        note = orjson.dumps({"pid": pid, "at": round(at, 1), **fields})
        data = f"pid {pid} on {socket.gethostname()}\n".encode() + note + b"\n"
        if len(data) > NOTE_BYTES:
            return
        try:
            os.pwrite(self.fd, data.ljust(NOTE_BYTES), 0)
        except OSError:
            pass


    def release(self) -> None:
        """Give the reserve back and unlock; safe to call twice."""
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # give the reserve back
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
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


def read_holders(folder: Path) -> list[tuple[str | None, LockHolder]]:
    """Who each lock file of the folder names: (None or the shard "I/N", holder)."""
    return _per_lock(folder, read_holder)


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

