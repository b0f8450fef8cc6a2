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

__all__ = ["JobRecord", "LockHolder", "compact_event", "digest", "restore", "spec_of"]


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
