"""An export is written aside, then swapped in whole: never left smaller and loadable.

Every file of a new export is written in ``.batchgen-stage-<split>/`` inside the export folder
(the same filesystem, so the swap is renames; a leading dot, so ``datasets`` never reads it),
units kept from the earlier export hard-linked there from the export's own files. The stage
records each finished unit (``.progress.json``), so a run cut short is resumed by the same
command: finished units are not written again. When every unit and the metadata are there,
a journal (``.batchgen-swap-<split>.json``) lists what moves in and what goes; the renames
follow, the state file last, and a swap cut short is finished by the next export before
anything else. Between two exports the folder holds one whole export, the old or the new.

The export folder is untrusted: a journal, a state file or a progress file names only files
of the layout's own pattern (anything else is ignored), and nothing is written, renamed or
removed through a symlink.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from batchgen.export.base import atomic_write
from batchgen.export.files import clean_relative, inside, read_no_follow
from batchgen.export.state import ExportState

__all__ = ["Stage", "finish_swap"]

_PROGRESS = ".progress.json"


def stage_folder(root: Path, split: str) -> Path:
    return root / f".batchgen-stage-{split}"


def journal_file(root: Path, split: str) -> Path:
    return root / f".batchgen-swap-{split}.json"


class Stage:
    """The folder a new export is written in before it is swapped in."""

    def __init__(self, root: Path, split: str) -> None:
        self.root = root
        self.split = split
        self.folder = stage_folder(root, split)

    def open(self) -> None:
        """Make the stage a real folder (a planted symlink in its place is removed)."""
        if self.folder.is_symlink() or (self.folder.exists() and not self.folder.is_dir()):
            self.folder.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Start the stage afresh: nothing in it belongs to this export."""
        if self.folder.is_dir() and not self.folder.is_symlink():
            shutil.rmtree(self.folder)
        self.open()

    def progress(self, allowed: Callable[[str], bool]) -> ExportState | None:
        """The units an export cut short finished in the stage, or None."""
        raw = read_no_follow(self.folder / _PROGRESS)
        return None if raw is None else ExportState.decode(raw, allowed)

    def save_progress(self, state: ExportState) -> None:
        atomic_write(self.folder, _PROGRESS, state.encode())

    def swap(self, moves: list[str], removes: list[str], allowed: Callable[[str], bool]) -> None:
        """Move ``moves`` (relative names, in the stage) into the export folder, remove
        ``removes`` from it, through a journal that the next export finishes if this is cut."""
        journal = {"split": self.split, "moves": moves, "removes": removes}
        tmp = self.root / f".batchgen-swap-{self.split}.{uuid.uuid4().hex}"
        tmp.write_bytes(orjson.dumps(journal))
        os.replace(tmp, journal_file(self.root, self.split))
        _roll(self.root, self.split, journal, allowed)


def finish_swap(root: Path, split: str, allowed: Callable[[str], bool]) -> bool:
    """Finish a swap an earlier export was cut in; True when there was one. Only names
    ``allowed`` (a layout's own file names for the split, the state file) move or go."""
    path = journal_file(root, split)
    raw = read_no_follow(path)
    if raw is None:
        if path.is_symlink():
            path.unlink()
        return False
    try:
        journal = orjson.loads(raw)
    except ValueError:
        journal = None
    if not isinstance(journal, dict):
        path.unlink(missing_ok=True)
        return False
    _roll(root, split, journal, allowed)
    return True


def _allowed(name: object, allowed: Callable[[str], bool]) -> str | None:
    clean = clean_relative(name)
    return clean if clean is not None and allowed(clean) else None


def _roll(root: Path, split: str, journal: dict, allowed: Callable[[str], bool]) -> None:
    """Each step can be done again: a move whose source is gone already happened."""
    stage = stage_folder(root, split)
    trash = stage / ".trash"
    moves = journal.get("moves") if isinstance(journal.get("moves"), list) else []
    removes = journal.get("removes") if isinstance(journal.get("removes"), list) else []
    for raw in moves:
        name = _allowed(raw, allowed)
        if name is None:
            continue
        source = stage / name
        if not os.path.lexists(source) or source.is_symlink():
            continue
        target = inside(root, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            if source.is_dir():
                target.unlink()
        elif target.is_dir():
            trash.mkdir(parents=True, exist_ok=True)
            os.replace(target, trash / uuid.uuid4().hex)
        os.replace(source, target)
    for raw in removes:
        name = _allowed(raw, allowed)
        if name is None:
            continue
        target = inside(root, name)
        if target.is_symlink() or target.is_file():
            target.unlink(missing_ok=True)
        elif target.is_dir():
            shutil.rmtree(target)
    _prune(root, removes)
    journal_file(root, split).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)


def _prune(root: Path, removes: list) -> None:
    """Remove folders the removals left empty (``__stats__/``, ``data/``), never ``root``."""
    parents = {Path(str(n)).parent for n in removes if clean_relative(n) is not None}
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        if parent == Path("."):
            continue
        try:
            (root / parent).rmdir()
        except OSError:
            pass
