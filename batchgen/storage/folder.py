"""The batch folder on disk: where images, sidecars and captions go, written atomically.

Every file is written under a temporary name in the batch's ``.tmp/`` folder and renamed into
place, so no partial file is ever visible under its final name. Names come from the manifest's
template and are checked once more here: nothing is ever written outside ``images/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from batchgen.errors import OutputError
from batchgen.job import Job
from batchgen.storage.sidecar import Sidecar
from batchgen.storage.writer import SavedFiles

__all__ = ["BatchFolder", "SavedFiles"]


class BatchFolder:
    """One batch's output folder (a Writer): ``ledger.jsonl``, ``images/`` and a private ``.tmp/``."""

    def __init__(self, root: Path, fsync: bool = False) -> None:
        self.root = Path(root)
        self.images = self.root / "images"
        self.tmp = self.root / ".tmp"
        self.fsync = fsync
        self._images_resolved: Path | None = None

    def prepare(self) -> None:
        """Create the folders, prove they are writable, and drop temp files of a crashed run."""
        try:
            self.images.mkdir(parents=True, exist_ok=True)
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir()
            probe = self.tmp / "probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise OutputError.from_os_error(f"in {self.root}", exc) from exc
        self._images_resolved = self.images.resolve()

    def relative(self, job: Job, suffix: str) -> str:
        """Path of one of the job's files, relative to the batch folder."""
        return f"images/{job.name}.{suffix}"

    def image_file(self, job: Job) -> str:
        return self.relative(job, job.extension)

    def _target(self, relative: str) -> Path:
        path = self.root / relative
        images = self._images_resolved or self.images.resolve()
        resolved = path.resolve()
        if images not in resolved.parents:
            raise OutputError(f"refusing to write {relative}: it is outside {self.images}")
        return path

    def has_result(self, file: str, size: int) -> bool:
        """True if a recorded image (of the recorded size) and its sidecar are both on disk."""
        image = self.root / file
        try:
            if image.stat().st_size != size:
                return False
            return image.with_suffix(".json").is_file()
        except OSError:
            return False

    def save(self, job: Job, data: bytes, sidecar: Sidecar) -> SavedFiles:
        """Write image, caption and sidecar (each atomically; the sidecar last). Blocking."""
        sha = hashlib.sha256(data).hexdigest()
        file = self.image_file(job)
        sidecar.image.file, sidecar.image.bytes, sidecar.image.sha256 = Path(file).name, len(data), sha
        files = [(file, data)]
        if job.caption is not None:
            files.append((self.relative(job, "txt"), job.caption.encode()))
        files.append((self.relative(job, "json"), sidecar.encode()))
        written: list[str] = []
        try:
            for relative, content in files:
                self._write(relative, content)
                written.append(relative)
        except OSError as exc:
            for relative in written:  # never leave an image without its sidecar
                (self.root / relative).unlink(missing_ok=True)
            raise OutputError.from_os_error(f"in {self.root}", exc) from exc
        return SavedFiles(file=file, size=len(data), sha256=sha)

    def _write(self, relative: str, data: bytes) -> None:
        target = self._target(relative)
        tmp = self.tmp / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
