"""Files derived from the manifest alone (a job's caption file, and its sidecar's caption,
axis values and index), kept in step with the manifest without a new task.

A done job's ledger line records a digest of what they were written from; when the manifest
now gives something else (a caption template edited, a label renamed), ``run`` rewrites them
from the job (the sidecar's other fields, and the image, stay as they were) and records the new
digest; ``plan`` counts how many it will. A line without a digest (a batch begun before digests
were kept) is checked against its sidecar once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from batchgen.job import Job
from batchgen.storage.record import DERIVED, JobRecord
from batchgen.storage.sidecar import Sidecar

__all__ = ["DERIVED_KEY", "derived_digest", "is_stale", "rederived", "sibling"]

#: the ledger key (a done line's, and its record's ``info``) holding the digest
DERIVED_KEY = DERIVED


def derived_digest(job: Job) -> str:
    """16 hex digits over what the derived files say: caption, axis values and index."""
    text = orjson.dumps({"caption": job.caption, "axes": job.axes, "index": job.index},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(text).hexdigest()[:16]


def is_stale(job: Job, rec: JobRecord) -> bool:
    """The done job's derived files were written from something else than ``job`` (or from
    something not recorded: checked once)."""
    return rec.get(DERIVED_KEY) != derived_digest(job)


def sibling(file: str, suffix: str) -> str:
    """The caption or sidecar beside a recorded image file (its path with another suffix)."""
    stem = file.rsplit(".", 1)[0] if "." in file.rsplit("/", 1)[-1] else file
    return f"{stem}.{suffix}"


def rederived(old: bytes, job: Job) -> bytes:
    """The sidecar ``old`` with the fields the manifest gives taken from ``job``; the same
    bytes when nothing changed. Raises ValueError when ``old`` is not a sidecar."""
    sidecar = Sidecar.decode(old)
    fields: dict[str, Any] = {"caption": job.caption, "axes": dict(job.axes), "index": job.index}
    if all(getattr(sidecar, name) == value for name, value in fields.items()):
        return old
    for name, value in fields.items():
        setattr(sidecar, name, value)
    return sidecar.encode()
