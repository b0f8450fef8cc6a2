"""What the engine needs from wherever results go: the Writer protocol.

The collector hands a Writer the checked image bytes and the sidecar and gets back what is
stored; resume asks it whether a recorded result is still whole. The local batch folder is
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


class Writer(Protocol):
    """Stores one job's image, caption and sidecar; never leaves a half-written file visible."""

    def prepare(self) -> None:
        """Create what is needed and prove it is writable, before anything is paid for."""

    def image_file(self, job: Job) -> str:
        """The image's path relative to the batch folder."""

    def has_result(self, file: str, size: int) -> bool:
        """True when a recorded image (of the recorded size) and its sidecar are both there."""

    def save(self, job: Job, data: bytes, sidecar: Sidecar) -> SavedFiles:
        """Write image, caption and sidecar (the sidecar last). Blocking; raises OutputError."""
