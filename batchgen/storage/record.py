"""What the ledger knows of one job, and who holds a batch folder: small records, kept lean.

A ``JobRecord`` holds only what every job has (state, task id, file, sizes, digest) and keeps
the rarer fields in one dict; a done job is held packed instead (storage/rows.py) until it is
looked up to change. The helpers turn a record into one compacted ledger line and back.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from batchgen.job import Failure, Job, JobState

__all__ = ["JobRecord", "LockHolder", "compact_event", "digest", "restore", "safe_file", "sound_event",
           "spec_of"]

#: the key of the derived files' digest (storage/derived.py), in a done line and its ``info``
DERIVED = "derived"
#: the longest task id a record may hold (the client takes no longer one from the provider)
MAX_TASK_ID = 256
#: the longest recorded file name (a path inside the batch folder)
MAX_FILE = 1024


class JobRecord:
    """What the ledger knows of one job, kept small (a done one is packed: storage/rows.py).

    ``spec`` (request, name, axes, caption) is held only while the task is out at the provider,
    so outstanding work can be collected even if the manifest changed; ``info`` holds the rarer
    fields (failure reason, timings, counts) only when there are any. A done job's one rarer
    field, the digest its derived files were written from, is held in ``info`` as that text
    alone: a dict per done job was the largest part of a big ledger's memory. ``get`` and
    ``details`` read both forms alike.
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
        self.info: dict[str, Any] | str | None = None
        #: when the job's latest event was written: of two ledgers of one folder that both
        #: know the job (shards, a run that finished a shard's work), the later one holds it
        self.at: float = 0.0

    def get(self, key: str, default: Any = None) -> Any:
        info = self.info
        if info is None:
            return default
        if type(info) is str:
            return info if key == DERIVED else default
        return info.get(key, default)

    def details(self) -> dict[str, Any] | None:
        """The rarer fields: spec, failure reason, timings (None when there are none)."""
        info = self.info
        return {DERIVED: info} if type(info) is str else info

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
        if type(self.info) is not dict:
            self.info = self.details() or {}
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
    get = event.get
    rec.task_id = get("task_id")
    rec.file = get("file")
    size, side = get("bytes"), get("sidecar_bytes")
    rec.size = size if type(size) is int else int(size or 0)
    rec.side = side if type(side) is int else int(side or 0)
    rec.gone = bool(get("gone"))
    rec.sha256 = digest(get("sha256"))
    info = get("info")
    if not isinstance(info, dict) or not info:
        rec.info = None
    elif len(info) == 1 and type(info.get(DERIVED)) is str:
        rec.info = info[DERIVED]  # the common done record: the digest alone
    else:
        rec.info = info
    at = get("at")
    if type(at) is float or isinstance(at, (int, float)):
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
    if value[0] == "/" or value[-1] == "/" or "//" in value or "\\" in value or "\0" in value:
        return False
    if value[0] != "." and "/." not in value:
        return True  # no segment starts with a dot: none is "." or ".."
    # no "", "." or ".." segment: framed in slashes, such a segment shows as //, /./ or /../
    framed = f"/{value}/"
    return "//" not in framed and "/./" not in framed and "/../" not in framed


_NO_AXES: dict[str, Any] = {}  # a spec without axes has none (a null is not a dict)


def _spec(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is not dict and not isinstance(value, dict):
        return False
    get = value.get
    request, axes = get("request"), get("axes", _NO_AXES)
    if type(request) is not dict and not isinstance(request, dict):
        return False
    if type(axes) is not dict and not isinstance(axes, dict):
        return False
    name, caption, index, replica = get("name"), get("caption"), get("index", -1), get("replica", 0)
    return ((name is None or type(name) is str or isinstance(name, str))
            and (caption is None or type(caption) is str or isinstance(caption, str))
            and (type(index) is int or _whole(index)) and (type(replica) is int or _whole(replica)))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _info(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    return _sound(value, _INFO_CHECKS)


def _sound(fields: dict[str, Any], checks: dict[str, Any]) -> bool:
    """Every field of ``fields`` that ``checks`` names passes its check. An absent field
    passes every check (each takes None), so only the fields present and checked are looked
    at (a line has few of them); text, counts and numbers, most of them, are tested inline."""
    for key in fields.keys() & checks.keys():
        value = fields[key]
        if value is None:
            continue
        check = checks[key]
        if check is _text:
            if not isinstance(value, str):
                return False
        elif check is _count:
            if type(value) is not int or value < 0:  # (not a bool: its type is bool)
                if not _count(value):
                    return False
        elif check is _number:
            if type(value) is not float and type(value) is not int and not _number(value):
                return False
        elif check is _task_id:
            if not isinstance(value, str) or len(value) > MAX_TASK_ID:
                return False
        elif not check(value):
            return False
    return True


def _task_id(value: Any) -> bool:
    return _text(value, MAX_TASK_ID)


def _file(value: Any) -> bool:
    return value is None or safe_file(value)


#: each field a record takes from a job event, and the check its value must pass (an absent
#: field passes every check, so only the fields a line has are looked at)
_CHECKS = {"task_id": _task_id, "file": _file, "bytes": _count, "sidecar_bytes": _count,
           "maybe_duplicated": _count, "sha256": _text, "size_got": _text, "code": _text,
           "reason": _text, "label": _text, "submitted_at": _number, "spec": _spec, "info": _info}


_INFO_CHECKS = {"spec": _spec, "reason": _text, "code": _text, "label": _text, "size_got": _text,
                "submitted_at": _number, "failed_at": _number}


def sound_event(event: dict[str, Any]) -> bool:
    """True when every field a record takes from this job event has the type it must have
    (a recorded ``file`` also a safe path inside the folder); False: skip the line. The
    lines batchgen writes (each shape's fields a subset of a known few) have just the fields
    they can hold checked, inline, with the same checks; any other line has all of its."""
    keys = event.keys()
    if keys.isdisjoint(_CHECKED):
        return True  # no field that needs a check (a generated line)
    get = event.get
    if keys <= _SUBMITTING:
        return _spec(get("spec"))
    if keys <= _SUBMITTED:
        value = get("task_id")
        if value is not None and (type(value) is not str or len(value) > MAX_TASK_ID) \
                and not _task_id(value):
            return False
        value = get("maybe_duplicated")
        return value is None or (type(value) is int and value >= 0) or _count(value)
    if keys <= _DONE:
        value = get("file")
        if value is not None and not safe_file(value):
            return False
        value = get("bytes")
        if value is not None and (type(value) is not int or value < 0) and not _count(value):
            return False
        value = get("sidecar_bytes")
        if value is not None and (type(value) is not int or value < 0) and not _count(value):
            return False
        value = get("sha256")
        if value is not None and type(value) is not str and not _text(value):
            return False
        value = get("task_id")
        if value is not None and (type(value) is not str or len(value) > MAX_TASK_ID) \
                and not _task_id(value):
            return False
        value = get("size_got")
        if value is not None and type(value) is not str and not _text(value):
            return False
        value = get("info")
        return value is None or (type(value) is dict and value.keys().isdisjoint(_INFO_CHECKED)) \
            or _info(value)
    return _sound(event, _CHECKS)


#: the fields a check applies to, and those of each shape of line batchgen writes (with the
#: fields that need no check): a run's submitting, submitted and done lines, a compacted one
_CHECKED = frozenset(_CHECKS)
_INFO_CHECKED = frozenset(_INFO_CHECKS)
_SUBMITTING = frozenset({"job", "state", "at", "spec"})
_SUBMITTED = frozenset({"job", "state", "at", "task_id", "attempts", "maybe_duplicated"})
_DONE = frozenset({"job", "state", "at", "compact", "gone", "file", "bytes", "sidecar_bytes", "sha256",
                   "task_id", "size_got", "info", "derived"})
