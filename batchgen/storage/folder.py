"""The batch folder on disk: where images, sidecars and captions go, written atomically.

Every file is written under a temporary name in the batch's ``.tmp/`` folder and renamed into
place, so no partial file is ever visible under its final name. Names come from the manifest's
template and are checked once more here: nothing is ever written outside ``images/``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
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
        # Folders already checked to lie inside images/ and created: once each, not per file.
        self._folders: set[Path] = set()
        self._names = itertools.count()

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
        """The path to write, its folder checked to lie inside images/ and created (each folder
        once). The file itself is renamed into place, which replaces a link, never follows it."""
        path = self.root / relative
        folder = path.parent
        if folder not in self._folders:
            images = self._images_resolved or self.images.resolve()
            resolved = folder.resolve()
            if resolved != images and images not in resolved.parents:
                raise OutputError(f"refusing to write {relative}: it is outside {self.images}")
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
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
        tmp = self.tmp / f"{next(self._names)}.part"   # .tmp/ is this run's alone (the folder lock)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            try:
                os.replace(tmp, target)
            except FileNotFoundError:   # its folder was deleted by hand meanwhile: make it again
                self._folders.discard(target.parent)
                os.replace(tmp, self._target(relative))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
