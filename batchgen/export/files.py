"""File handling an export can trust: recorded paths checked, no symlink followed, and images
copied (a reflink where the filesystem has them) rather than hard-linked to what was paid for.

A batch folder and an export folder may have been copied, edited or planted: a ledger record,
a state file or a swap journal is untrusted text. A recorded path is used only when it is
relative, has no ``..``, and leads to a regular file inside its folder through no symlink;
files are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path, PurePosixPath

from batchgen.errors import UsageError

__all__ = ["Copier", "clean_relative", "copy_bytes", "inside", "read_no_follow"]

#: ``ioctl(dst, FICLONE, src)``: the destination shares the source's blocks (Btrfs, XFS, ...)
FICLONE = 0x40049409
#: errors that say "this filesystem cannot do that here", not "something is wrong"
_CANNOT = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES,
           errno.EINVAL, errno.ENOTTY, errno.EBADF}


def clean_relative(relative: object) -> str | None:
    """``relative`` as a plain relative POSIX path, or None when it is not one (absolute, with
    ``..``, empty parts, a backslash or a NUL)."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\0" in relative:
        return None
    path = PurePosixPath(relative)
    if path.is_absolute() or any(part in ("", ".", "..") for part in relative.split("/")):
        return None
    return relative


def inside(root: Path, relative: str) -> Path:
    """``root/relative``, refusing a path that is not plain or passes through a symlink (a
    planted ``data -> /elsewhere`` would make every write land outside ``root``)."""
    if clean_relative(relative) is None:
        raise UsageError(f"{root}: refusing the path {relative!r}, which is not inside the folder")
    current = root
    for part in relative.split("/")[:-1]:
        current = current / part
        if current.is_symlink():
            raise UsageError(f"{current} is a symbolic link; an export never writes or removes "
                             f"through one (remove it, or export to another folder)")
    return root / relative


def read_no_follow(path: Path) -> bytes | None:
    """A regular file's bytes, or None when it is missing, not a regular file, or a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)


class Copier:
    """Makes an exported image a file of its own: a reflink of the original where the
    filesystem has them, else the verified bytes written out; never a hard link unless asked."""

    def __init__(self) -> None:
        self.can_clone = True
        self.can_link = True

    def copy(self, source: Path | None, data: bytes, target: Path) -> str:
        """Write ``data`` (already checked) to ``target`` (a fresh temporary name); returns
        how: "reflinked" or "copied"."""
        if source is not None and self.can_clone:
            if _clone(source, target, len(data)):
                return "reflinked"
            self.can_clone = False  # this filesystem has none: plain copies from now on
        copy_bytes(data, target)
        return "copied"

    def link(self, source: Path, data: bytes, target: Path) -> str:
        """``--link``: a hard link to the original, both made read-only (an edit in place of
        the export would change the paid original); a copy where links are impossible."""
        if self.can_link:
            try:
                os.link(source, target, follow_symlinks=False)
                linked = os.stat(target, follow_symlinks=False)
                if stat.S_ISREG(linked.st_mode) and linked.st_size == len(data):
                    os.chmod(target, stat.S_IMODE(linked.st_mode) & ~0o222)
                    return "hard-linked (read-only)"
                os.unlink(target)
            except OSError as exc:
                if exc.errno not in _CANNOT:
                    raise
                self.can_link = False
        copy_bytes(data, target)
        return "copied"


def _clone(source: Path, target: Path, size: int) -> bool:
    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(src).st_size != size:
            return False
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.ioctl(dst, FICLONE, src)
            return True
        except OSError as exc:
            os.close(dst)
            dst = -1
            os.unlink(target)
            if exc.errno not in _CANNOT:
                raise
            return False
        finally:
            if dst >= 0:
                os.close(dst)
    finally:
        os.close(src)


def copy_bytes(data: bytes, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
