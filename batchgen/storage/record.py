"""What the ledger knows of one job, and who holds a batch folder: small records, kept lean.

A million ``JobRecord`` objects stay in memory for a big batch, so each holds only what every
job has (state, task id, file, sizes, digest) and keeps the rarer fields in one dict. The
helpers turn a record into one compacted ledger line and back.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from batchgen.job import Failure, Job, JobState

__all__ = ["JobRecord", "LockHolder", "compact_event", "digest", "restore", "safe_file", "sound_event",
           "spec_of"]

#: the longest task id a record may hold (the client takes no longer one from the provider)
MAX_TASK_ID = 256
#: the longest recorded file name (a path inside the batch folder)
MAX_FILE = 1024


class JobRecord:
    """What the ledger knows of one job, kept small: a million of these stay in memory.

    ``spec`` (request, name, axes, caption) is held only while the task is out at the provider,
    so outstanding work can be collected even if the manifest changed; ``info`` holds the rarer
    fields (failure reason, timings, counts) only when there are any.
    """

    __slots__ = ("state", "task_id", "file", "size", "side", "sha256", "info", "seen", "gone", "at")

    def __init__(self) -> None:
        self.seen = False  # set while a pass meets the job in the manifest: unseen ones vanished
        self.gone = False  # recorded: the manifest of the last run no longer had this job
        self.state = JobState.PENDING
        self.task_id: str | None = None
        self.file: str | None = None
        self.size: int = 0
        self.side: int = 0  # the sidecar's bytes (0: not recorded, by a batchgen before 0.2)
        self.sha256: bytes | None = None  # raw digest of the image: half the memory of hex
        self.info: dict[str, Any] | None = None
        #: when the job's latest event was written: of two ledgers of one folder that both
        #: know the job (shards, a run that finished a shard's work), the later one holds it
        self.at: float = 0.0

    def get(self, key: str, default: Any = None) -> Any:
        info = self.details()
        return info.get(key, default) if info else default

    def details(self) -> dict[str, Any] | None:
        """The rarer fields: spec, failure reason, timings (None when there are none)."""
        return self.info

    @property
    def failure(self) -> Failure | None:
        """The typed reason of a failed job (None unless failed)."""
        code = self.get("code")
        return Failure.from_code(code) if code else None

    @property
    def label(self) -> str:
        """What the failure is counted under (the provider's reason for a rejection)."""
        return self.get("label") or self.get("code") or "unknown"

    @property
    def size_got(self) -> str | None:
        """The image's size as received ("W*H") when it is not the size the request asked for."""
        return self.get("size_got")

    @property
    def sha256_hex(self) -> str | None:
        return self.sha256.hex() if self.sha256 is not None else None

    def _set(self, key: str, value: Any) -> None:
        if self.info is None:
            self.info = {}
        self.info[key] = value

    def job(self, job_id: str) -> Job | None:
        """The job as it was submitted, rebuilt from the ledger (None if not recorded)."""
        spec = self.get("spec")
        if not spec:
            return None
        return Job(job_id=job_id, index=int(spec.get("index", -1)), request=spec["request"],
                   axes=spec.get("axes", {}), replica=int(spec.get("replica", 0)),
                   name=spec.get("name", job_id), caption=spec.get("caption"))

    def __repr__(self) -> str:
        return f"JobRecord(state={self.state!r}, task_id={self.task_id!r}, file={self.file!r})"


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a batch folder's lock, as the lock file says (a run writes it when it starts)."""

    pid: int
    host: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.host else f"pid {self.pid}"

    @property
    def alive(self) -> bool | None:
        """True if the process runs (on this host), False if not; None: another host, unknown."""
        if self.host and self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OSError:
            return None
        return True


def compact_event(job_id: str, rec: JobRecord) -> dict[str, Any]:
    """One line that replays to the same record (task counts live in the header)."""
    event: dict[str, Any] = {"job": job_id, "state": rec.state, "compact": 1}
    if rec.at:
        event["at"] = rec.at
    if rec.task_id:
        event["task_id"] = rec.task_id
    if rec.file:
        event["file"] = rec.file
        event["bytes"] = rec.size
    if rec.side:
        event["sidecar_bytes"] = rec.side
    if rec.gone:
        event["gone"] = 1
    if rec.sha256 is not None:
        event["sha256"] = rec.sha256.hex()
    info = rec.details()
    if info:
        event["info"] = info
    return event


def restore(rec: JobRecord, event: dict[str, Any]) -> JobRecord:
    rec.task_id = event.get("task_id")
    rec.file = event.get("file")
    rec.size = int(event.get("bytes", 0) or 0)
    rec.side = int(event.get("sidecar_bytes", 0) or 0)
    rec.gone = bool(event.get("gone"))
    rec.sha256 = digest(event.get("sha256"))
    info = event.get("info")
    rec.info = info if isinstance(info, dict) and info else None
    at = event.get("at")
    if isinstance(at, (int, float)):
        rec.at = float(at)
    return rec


def spec_of(job: Job) -> dict[str, Any]:
    """The job as submitted, kept while its task is out: it can be collected (or redone)
    even if the manifest changed."""
    spec: dict[str, Any] = {"request": job.request, "name": job.name, "axes": job.axes,
                            "replica": job.replica, "index": job.index}
    if job.caption is not None:
        spec["caption"] = job.caption
    return spec


def digest(value: Any) -> bytes | None:
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None
    return None


# -- a ledger line is untrusted input -------------------------------------------------------------
#
# A batch folder may have been copied, edited or planted (docs/security.md). A line that decodes
# as JSON but holds a field of the wrong type (``"bytes": "abc"``, ``"file": 12345``, ``"spec":
# [1, 2]``) is as unreadable as a torn one: ``sound_event`` says so before the line becomes a
# record, and the ledger skips and counts it like an undecodable line.

def _count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _text(value: Any, limit: int | None = None) -> bool:
    return value is None or (isinstance(value, str) and (limit is None or len(value) <= limit))


def safe_file(value: Any) -> bool:
    """A recorded image path batchgen may open: relative, inside the folder (no ``..``, no
    absolute or drive path, no backslash, no NUL), short."""
    if not isinstance(value, str) or not value or len(value) > MAX_FILE:
        return False
    if value.startswith("/") or "\\" in value or "\0" in value:
        return False
    return all(part not in ("", ".", "..") for part in value.split("/"))


def _spec(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or not isinstance(value.get("request"), dict):
        return False
    return (isinstance(value.get("axes", {}), dict) and _text(value.get("name"))
            and _text(value.get("caption")) and _whole(value.get("index", -1))
            and _whole(value.get("replica", 0)))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _info(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    return (_spec(value.get("spec")) and _text(value.get("reason")) and _text(value.get("code"))
            and _text(value.get("label")) and _text(value.get("size_got"))
            and _number(value.get("submitted_at")) and _number(value.get("failed_at")))


def sound_event(event: dict[str, Any]) -> bool:
    """True when every field a record takes from this job event has the type it must have
    (a recorded ``file`` also a safe path inside the folder); False: skip the line."""
    file = event.get("file")
    return (_text(event.get("task_id"), MAX_TASK_ID) and (file is None or safe_file(file))
            and _count(event.get("bytes")) and _count(event.get("sidecar_bytes"))
            and _count(event.get("maybe_duplicated")) and _text(event.get("sha256"))
            and _text(event.get("size_got")) and _text(event.get("code")) and _text(event.get("reason"))
            and _text(event.get("label")) and _number(event.get("submitted_at"))
            and _spec(event.get("spec")) and _info(event.get("info")))
