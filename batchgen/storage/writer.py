"""What the engine needs from wherever results go: the Writer protocol.

The collector hands a Writer the checked image bytes and the sidecar and gets back what is
stored; a group commit then asks it to make a batch of saves durable at once; resume asks it
whether a recorded result is still whole. The local batch folder is
one Writer; an object store is another, without a change to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from batchgen.job import Job
from batchgen.storage.sidecar import Sidecar

__all__ = ["SavedFiles", "Writer"]


@dataclass(frozen=True, slots=True)
class SavedFiles:
    """What ended up stored for one job; ``file`` is relative to the batch folder."""

    file: str
    size: int
    sha256: str
    sidecar_size: int = 0  # bytes of the sidecar as written: resume checks it is still whole


class Writer(Protocol):
    """Stores one job's image, caption and sidecar; never leaves a half-written file visible."""

    #: True when the calls are network I/O (an object store): the engine then calls
    #: ``prepare`` and ``save`` in a worker thread; False for a local disk
    remote: bool

    def prepare(self) -> None:
        """Create what is needed and prove it is writable, before anything is paid for."""

    def image_file(self, job: Job) -> str:
        """The image's path relative to the batch folder."""

    def has_result(self, file: str, size: int, sidecar_size: int = 0) -> bool:
        """True when a recorded image of the recorded size and a whole sidecar (of
        ``sidecar_size`` bytes; one that parses when 0) are both there."""

    def save(self, job: Job, data: bytes, sidecar: Sidecar) -> SavedFiles:
        """Write image, caption and sidecar (the sidecar last), visible at once under their
        final names, but perhaps not yet on disk. Fill in ``sidecar.image.file`` with the
        returned ``file``. Blocking; raises OutputError."""

    # A Writer may also offer ``rewrite_derived(job, file) -> (sidecar bytes, changed)``: the
    # caption and the sidecar fields the manifest gives, rewritten beside a done image
    # (storage/derived.py); without it, a run leaves them as they are.

    def sync(self) -> None:
        """Make everything saved so far durable (an object store's writes already are).
        The engine records a job done only after the ``sync`` that follows its ``save``."""
