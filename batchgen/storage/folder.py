"""The batch folder on disk: where images, sidecars and captions go, written atomically.

Every file is written under a temporary name in the batch's ``.tmp/`` folder and renamed into
place, so no partial file is ever visible under its final name. Names come from the manifest's
template and are checked once more here: nothing is ever written outside ``images/``.
``sync()`` makes every file saved since the last call durable at once (one group of fsyncs,
files then folders), so the engine records jobs done only once their bytes are on disk.
At hundreds of jobs per second the filesystem calls are the cost, so each folder is made and
checked once per run, and temp files are named by a counter.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import threading
import uuid
from pathlib import Path

from batchgen.errors import NotABatchFolder, OutputError
from batchgen.job import Job
from batchgen.storage.guard import NOFOLLOW, refuse_link, regular_inside, write_all
from batchgen.storage.live import STATUS_FILE
from batchgen.storage.ledger import (LEDGER_FILE, LEDGERS_DIR, LOCK_FILE, MIRROR_DIR, ShardPart,
                                     has_ledger, shard_stem)
from batchgen.storage.sidecar import Sidecar
from batchgen.storage.writer import SavedFiles

__all__ = ["BatchFolder", "SavedFiles", "check_batch_folder", "image_path"]

# What batchgen itself puts in a batch folder: the ledger and its lock, the temp folder, the
# live status file a run keeps for the viewer, and the viewer's default folder.
_OWN = frozenset({LEDGER_FILE, LOCK_FILE, ".tmp", LEDGER_FILE + ".tmp", STATUS_FILE, "view",
                  LEDGERS_DIR, MIRROR_DIR})


def image_path(job: Job) -> str:
    """Where the folder puts a job's image, relative to the batch folder."""
    return f"images/{job.name}.{job.extension}"


def check_batch_folder(root: Path) -> None:
    """Refuse a folder that holds files but no ledger: it is somebody's, not a batch's.

    An empty folder, or one left by a run that stopped before its first record (a lock file,
    an empty ``images/``), is fine.
    """
    root = Path(root)
    if not root.is_dir() or has_ledger(root):
        return
    try:
        entries = [p for p in root.iterdir() if p.name not in _OWN]
        images = root / "images"
        if images.is_dir() and not any(images.iterdir()):
            entries = [p for p in entries if p != images]
    except OSError:
        return  # unreadable: writing into it fails with its own clear error
    if entries:
        shown = ", ".join(sorted(p.name for p in entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise NotABatchFolder(
            f"{root} is not a batch folder: it holds other files ({shown}) and no {LEDGER_FILE}. "
            f"batchgen writes only into a new or empty folder, or one of its own batches; "
            f"choose another output folder.", root)


class BatchFolder:
    """One batch's output folder (a Writer): ``ledger.jsonl``, ``images/`` and a private ``.tmp/``.

    ``durable`` (the default) makes ``sync()`` fsync what was saved; off, files are left to
    the OS (a benchmark's baseline, or a throwaway folder).

    ``shard``: the run is one shard of several, running beside the others in this folder. Its
    temp files are then in ``.tmp/shard-I-of-N/`` and its probes carry that name, so that
    ``prepare`` drops only what a crashed run of the same shard left: every other shard may be
    writing at that moment. A whole-batch run holds the folder alone and clears all of ``.tmp/``.
    """

    remote = False  # a local disk: saves run inline, big ones off the loop

    def __init__(self, root: Path, durable: bool = True, shard: ShardPart | None = None) -> None:
        self.root = Path(root)
        self.images = self.root / "images"
        self._own = "" if shard is None else shard_stem(shard)
        self.tmp = self.root / ".tmp" / self._own if self._own else self.root / ".tmp"
        self.durable = durable
        self._images_resolved: Path | None = None
        self._images_path = os.path.join(self.root, "images")
        self._unsynced: list[str] = []  # saved, not yet fsynced; saves may run in threads
        self._lock = threading.Lock()
        # Folders made (or found) and checked to be inside images/ in this run: one mkdir and
        # one resolve per folder, not per file. A set's add and a counter's next are atomic,
        # so saves in worker threads share them safely.
        self._made: set[str] = set()
        self._tmp_names = itertools.count()
        self._tmp_prefix = ""

    def prepare(self) -> None:
        """Create the folders, prove a file can be put in place in ``images/`` the way every
        result is (written in ``.tmp/``, renamed), and drop temp files of a crashed run."""
        probes = f".probe-{self._own}-" if self._own else ".probe-"
        for entry, what in ((self.images, "images folder"), (self.root / ".tmp", "temp folder"),
                            (self.tmp, "temp folder")):
            refuse_link(entry, what)
        try:
            self.images.mkdir(parents=True, exist_ok=True)
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(parents=True, exist_ok=True)
            for left in self.images.glob(f"{probes}*"):  # a crash right in the last probe
                with contextlib.suppress(FileNotFoundError):
                    left.unlink()
            probe = self.tmp / "probe"
            probe.write_bytes(b"ok")
            placed = self.images / f"{probes}{uuid.uuid4().hex}"
            os.replace(probe, placed)
            placed.unlink()
        except OSError as exc:
            where = self.images if self.tmp.is_dir() else self.root
            raise OutputError.from_os_error(f"in {where}", exc) from exc
        self._images_resolved = self.images.resolve()
        self._made = set()
        # The temp folder is emptied above and the ledger's lock keeps other runs of it out,
        # so a counter is a unique name; the pid only guards against a lock broken by hand.
        self._tmp_prefix = os.path.join(self.tmp, f"{os.getpid()}-")

    def relative(self, job: Job, suffix: str) -> str:
        """Path of one of the job's files, relative to the batch folder."""
        return f"images/{job.name}.{suffix}"

    def image_file(self, job: Job) -> str:
        return image_path(job)

    def _target(self, relative: str) -> str:
        """The path to write ``relative`` to, its folder made; OutputError if it is outside
        ``images/``. The folder is made and resolved (symlinks followed) the first time it is
        seen; the file itself is replaced by a rename, which never follows a link there."""
        path = os.path.join(self.root, relative)
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            raise OutputError(f"refusing to write {relative}: it is not a file name")
        if folder in self._made:
            return path
        if os.path.dirname(folder) == self._images_path:
            try:
                os.mkdir(folder)
            except OSError:
                pass  # there already (perhaps a link), or no parent yet: the full check below
            else:  # made just now, directly in images/: a real folder inside it, no check needed
                self._made.add(folder)
                return path
        images = self._images_resolved or self.images.resolve()
        Path(folder).mkdir(parents=True, exist_ok=True)
        resolved = Path(folder).resolve()
        if resolved != images and images not in resolved.parents:
            raise OutputError(f"refusing to write {relative}: it is outside {self.images}")
        self._made.add(folder)
        return path

    def has_result(self, file: str, size: int, sidecar_size: int = 0) -> bool:
        """True if a recorded image of the recorded size and a whole sidecar are on disk.

        The sidecar is whole when it has its recorded size; when none was recorded (a ledger
        written before sizes were), it must parse as a sidecar.
        """
        image = regular_inside(self.root, file)  # a recorded path is untrusted input
        if image is None:
            return False
        sidecar = image.with_suffix(".json")
        try:
            if image.stat().st_size != size:
                return False
            if sidecar_size:
                return sidecar.stat().st_size == sidecar_size
            Sidecar.decode(sidecar.read_bytes())
            return True
        except (OSError, ValueError):
            return False

    def save(self, job: Job, data: bytes, sidecar: Sidecar) -> SavedFiles:
        """Write image, caption and sidecar (each atomically; the sidecar last). Blocking."""
        sha = hashlib.sha256(data).hexdigest()
        file = self.image_file(job)
        sidecar.image.file, sidecar.image.bytes, sidecar.image.sha256 = file, len(data), sha
        side = sidecar.encode()
        files = [(file, data)]
        if job.caption is not None:
            files.append((self.relative(job, "txt"), job.caption.encode()))
        files.append((self.relative(job, "json"), side))
        written: list[str] = []
        try:
            for relative, content in files:
                written.append(self._write(relative, content))
        except OSError as exc:
            for path in written:  # never leave an image without its sidecar
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise OutputError.from_os_error(f"in {self.root}", exc) from exc
        if self.durable:
            with self._lock:
                self._unsynced.extend(written)
        return SavedFiles(file=file, size=len(data), sha256=sha, sidecar_size=len(side))

    def rewrite_derived(self, job: Job, file: str) -> tuple[int, bool]:
        """Rewrite the caption and the sidecar fields the manifest gives (storage/derived.py)
        beside the image recorded at ``file``; returns the sidecar's bytes and whether it
        changed. Blocking; raises
        OutputError, or ValueError when the sidecar there is not one."""
        from batchgen.storage.derived import rederived, sibling

        side = sibling(file, "json")
        try:
            old = (self.root / side).read_bytes()
            new = rederived(old, job)
            caption = sibling(file, "txt")
            written = []
            if job.caption is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.root, caption))
            else:
                written.append(self._write(caption, job.caption.encode()))
            if new != old:
                written.append(self._write(side, new))
        except OSError as exc:
            raise OutputError.from_os_error(f"in {self.root}", exc) from exc
        if self.durable and written:
            with self._lock:
                self._unsynced.extend(written)
        return len(new), new != old

    def sync(self) -> None:
        """fsync every file saved since the last call, then the folders that hold them (so
        the renames last too). Blocking; raises OutputError."""
        with self._lock:
            paths, self._unsynced = self._unsynced, []
        if not paths:
            return
        folders: dict[str, None] = {}
        try:
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # removed since (by hand): resume finds it missing and repairs it
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                folders[os.path.dirname(path)] = None
            for folder in folders:
                fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise OutputError.from_os_error(f"in {self.root}", exc) from exc

    def _write(self, relative: str, data: bytes) -> str:
        target = self._target(relative)
        if not self._tmp_prefix:   # saved without prepare() (a folder made by hand)
            self.tmp.mkdir(parents=True, exist_ok=True)
            self._tmp_prefix = os.path.join(self.tmp, f"{os.getpid()}-")
        tmp = f"{self._tmp_prefix}{next(self._tmp_names)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, target)
            except FileNotFoundError:   # its folder was removed since it was made: make it again
                self._made.discard(os.path.dirname(target))
                os.replace(tmp, self._target(relative))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target
