"""A batch folder's own entries, treated as untrusted: no symlink on the way out of it.

A batch folder may have been copied, edited or planted (docs/security.md): ``images/``, the
lock, the ledger or ``view/`` made symlinks to somewhere else would have batchgen truncate,
append to or replace files outside the folder. So the folder's own entries are refused when
they are links, files batchgen creates are created exclusively without following a link, and
a recorded path is taken only when it resolves to a regular file inside the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from batchgen.errors import OutputError

__all__ = ["LINK_NOTE", "NOFOLLOW", "refuse_link", "regular_inside", "write_all", "write_new"]

#: open() flag that refuses a symlink as the last part of a path (0 where there is none)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: said when one of the folder's own files is a symbolic link (docs/security.md)
LINK_NOTE = (" (a symbolic link: batchgen reads and writes nothing outside the batch folder; "
             "remove the link)")


def refuse_link(path: Path | str, what: str) -> None:
    """OutputError when ``path`` (one of the batch folder's own entries) is a symlink."""
    if os.path.islink(path):
        raise OutputError(f"refusing to use {path}: the {what} is a symbolic link (to "
                          f"{os.readlink(path)}), and batchgen writes nothing outside the batch "
                          f"folder. Remove the link, or use another folder.")


def regular_inside(root: Path | str, relative: str) -> Path | None:
    """The path of ``relative`` under ``root`` when it is a regular file (not a link) whose
    real location is inside ``root``; None otherwise (missing, a link, outside)."""
    path = Path(root) / relative
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        real, top = path.resolve(), Path(root).resolve()
    except (OSError, RuntimeError):
        return None
    return path if top in real.parents else None


def write_new(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a new file at ``path``: created exclusively, never through a link
    (a stale file of that name is removed first). Raises OSError."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Every byte of ``data`` to ``fd`` with os.write (no buffered file object for bytes
    written in one call); a write that takes nothing is a full disk. Raises OSError."""
    view = memoryview(data)
    while view:
        wrote = os.write(fd, view)
        if not wrote:
            raise OSError(errno.ENOSPC, "no byte written")
        view = view[wrote:]
