"""The live status file: what a running batch has done lately, for a viewer to watch it fill in.

``status.js`` in the batch folder holds the newest state of the jobs that changed most recently
(a bounded number, newest last, each with a sequence number) and the run's counters, as one
JavaScript call, so a static page opened from ``file://`` can load it with a ``<script>`` tag
(browsers refuse to fetch local JSON) and apply what it has not seen. The writer tails the
ledger file itself rather than hooking into it: it reads only lines already on disk, so it can
never hold up, reorder or lose a ledger write, and its cost is one small read and one small
atomic write per refresh. A status file is a convenience: failing to write it never stops a
batch, and it never holds a key (it holds only what the ledger holds).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from batchgen.safetext import clean_text
from batchgen.storage.ledger import RESERVE_BYTES, Ledger

__all__ = ["STATUS_CALLBACK", "STATUS_FILE", "LiveStatus", "Progress", "read_status",
           "write_idle_status"]

STATUS_FILE = "status.js"
#: The function ``status.js`` calls with its JSON; a page defines it before loading the file.
STATUS_CALLBACK = "batchgenStatus"
FORMAT = 1
#: Jobs whose latest change is kept: at 200 jobs/s, ten seconds of a fast batch.
CAPACITY = 2000
#: Free space the status file never eats into: the ledger's reserve (which a full disk frees
#: for the ledger's last lines) several times over, so the file can never take those bytes.
KEEP_FREE = 4 * RESERVE_BYTES
#: The ledger's states as a viewer shows a cell: the task is out (or going out), done, failed, or
#: put back to wait for a new submit.
_CELL_STATE = {"submitting": "running", "submitted": "running", "generated": "running",
               "done": "done", "failed": "failed", "pending": "pending"}


class Progress(Protocol):
    """The run's live counters (the engine's RunStats), read when the file is written."""

    planned: int
    already_done: int
    done: int
    failed: int
    in_flight: int


class LiveStatus:
    """Writes ``status.js`` for one run of a batch; ``refresh`` now and then, ``close`` at the end."""

    def __init__(self, folder: Path, ledger: Ledger, *, wall: Callable[[], float] = time.time,
                 capacity: int = CAPACITY) -> None:
        self.folder = Path(folder)
        # A shard's run keeps its own file beside its ledger: shards never write over each
        # other's; the viewer's live fill-in follows a run of the whole batch.
        self.path = (self.folder / STATUS_FILE if ledger.shard is None
                     else ledger.path.with_name(ledger.path.stem + ".status.js"))
        self.batch = ledger.batch
        self.progress: Progress | None = None
        self.write_errors = 0
        self._wall = wall
        self._capacity = capacity
        self._ledger_path = ledger.path
        # What is on disk now is already in the ledger's memory; only what follows is news.
        self._inode, self._offset = _where(self._ledger_path)
        self._run = f"{int(wall() * 1000):x}-{os.getpid()}"
        self._seq = 0
        self._dropped = 0  # the highest sequence number no longer in the file
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Jobs already out when this run starts: their axes are only in the ledger's memory.
        self._axes: dict[str, Any] = {}
        for job_id, rec in ledger.records.loose():  # (a packed job is done)
            if rec.state in ("submitting", "submitted", "generated"):
                spec = rec.get("spec")
                if isinstance(spec, dict) and spec.get("axes") is not None:
                    self._axes[job_id] = spec["axes"]
        self._dirty = True
        self._running = True

    # -- reading the ledger's tail ----------------------------------------------------------

    def _tail(self) -> None:
        try:
            with open(self._ledger_path, "rb") as fh:
                st = os.fstat(fh.fileno())
                size = st.st_size
                if st.st_ino != self._inode or size < self._offset:
                    # Rewritten by a compaction: everything in it was known already.
                    self._inode, self._offset = st.st_ino, size
                    return
                fh.seek(self._offset)
                data = fh.read(size - self._offset)
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for raw in data[:end].split(b"\n"):
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and isinstance(event.get("job"), str):
                self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        job_id = event["job"]
        state = _CELL_STATE.get(str(event.get("state")))
        if state is None:
            return
        entry = self._recent.pop(job_id, None)
        if entry is None:
            entry = {"job": job_id}
            axes = self._axes.pop(job_id, None)
            if axes is not None:
                entry["axes"] = axes
        spec = event.get("spec")
        if isinstance(spec, dict) and spec.get("axes") is not None:
            entry["axes"] = spec["axes"]
        if event.get("task_id"):
            entry["task"] = event["task_id"]
        if event.get("seed") is not None:
            entry["seed"] = event["seed"]
        if event.get("state") == "submitted" and not event.get("again"):
            entry["submitted_at"] = event.get("at")
        if state == "done":
            entry["file"] = event.get("file")
            entry["done_at"] = event.get("at")
        elif state == "failed":
            entry["label"] = clean_text(str(event.get("label") or event.get("code") or "unknown"), 100)
            entry["reason"] = clean_text(str(event.get("reason", "")), 500)
        if state != "failed":
            entry.pop("label", None)
            entry.pop("reason", None)
        if state != "done":
            entry.pop("file", None)
        self._seq += 1
        entry["state"] = state
        entry["seq"] = self._seq
        self._recent[job_id] = entry
        while len(self._recent) > self._capacity:
            _, old = self._recent.popitem(last=False)
            self._dropped = max(self._dropped, old["seq"])
        self._dirty = True

    # -- writing --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Take in what the ledger gained since the last call; rewrite the file if anything did."""
        self._tail()
        if self._dirty:
            self._write()

    def close(self) -> None:
        """The last refresh: the run is over (``running`` false), whatever ended it."""
        self._tail()
        self._running = False
        self._write()

    def snapshot(self) -> dict[str, Any]:
        progress = self.progress
        counters = None
        if progress is not None:
            counters = {"planned": progress.planned, "done": progress.already_done + progress.done,
                        "failed_this_run": progress.failed, "in_flight": progress.in_flight}
        return {"format": FORMAT, "batch": self.batch, "run": self._run, "running": self._running,
                "updated": round(self._wall(), 3), "seq": self._seq, "dropped": self._dropped,
                "progress": counters, "jobs": list(self._recent.values())}

    def _write(self) -> None:
        self._dirty = False
        if _write_status(self.path, self.snapshot()):
            return
        self.write_errors += 1


def write_idle_status(folder: Path, batch: str | None) -> bool:
    """Write a status file saying no run is going on, unless one is there already (a viewer
    polls it, and a missing file would be an error in the page's console). True if written."""
    path = Path(folder) / STATUS_FILE
    if path.exists():
        return False
    return _write_status(path, {"format": FORMAT, "batch": batch, "run": None, "running": False,
                                "updated": round(time.time(), 3), "seq": 0, "dropped": 0,
                                "progress": None, "jobs": []})


def read_status(folder: Path) -> dict[str, Any] | None:
    """The status file's JSON, or None when there is none or it is not one (a reader may meet
    it between runs of different versions; a missing file is the usual case)."""
    try:
        raw = (Path(folder) / STATUS_FILE).read_bytes()
    except OSError:
        return None
    start = raw.find(STATUS_CALLBACK.encode() + b"(")
    end = raw.rfind(b");")
    if start < 0 or end < start:
        return None
    try:
        data = orjson.loads(raw[start + len(STATUS_CALLBACK) + 1:end])
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _write_status(path: Path, data: dict[str, Any]) -> bool:
    body = (b"/* batchgen live status: written by the running batch, read by its viewer */\n"
            + STATUS_CALLBACK.encode() + b"(" + orjson.dumps(data) + b");\n")
    try:
        disk = os.statvfs(path.parent)
        if disk.f_bavail * disk.f_frsize < len(body) + KEEP_FREE:
            return False  # the disk is (nearly) full: its last bytes are the ledger's
    except OSError:
        return False
    # Beside the images' temp files: a run clears that folder on start, so a kill mid-write
    # leaves nothing behind in the batch folder.
    tmp = path.parent / ".tmp" / (path.name + ".tmp")
    try:
        tmp.parent.mkdir(exist_ok=True)
        if tmp.parent.is_symlink():  # a planted .tmp: write nothing through it
            return False
        tmp.unlink(missing_ok=True)
        with open(tmp, "xb") as fh:   # created exclusively: never through a planted link
            fh.write(body)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    return True


def _where(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return 0, 0
    return st.st_ino, st.st_size
