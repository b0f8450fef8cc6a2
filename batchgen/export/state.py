"""What an export folder already holds: ``.batchgen-export-<split>.json``, one per split.

It records the format, the filters, the columns and, per unit, a digest of its rows and the
files it made, so exporting again after more jobs finished keeps every unit whose rows did
not change and rewrites only the others. Written last (temp file and rename): an export cut
short leaves the previous state, whose digests then no longer match what changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchgen._version import __version__
from batchgen.export.base import atomic_write, layouts
from batchgen.export.files import clean_relative, read_no_follow

__all__ = ["ExportState", "UnitRecord", "batchgen_names", "state_file"]

FORMAT = 1


def state_file(split: str) -> str:
    return f".batchgen-export-{split}.json"


def batchgen_names(split: str) -> Callable[[str], bool]:
    """Whether a name (relative to the export folder) is one batchgen gives a file of this
    split: a registered layout's, or the state file. Names read from an export folder (state,
    progress, swap journal) are acted on only when this says yes."""
    patterns = [kind.file_pattern(split) for kind in layouts().values()]
    fixed = {state_file(split)}

    def allowed(name: str) -> bool:
        return clean_relative(name) is not None and (
            name in fixed or any(p.fullmatch(name) for p in patterns))
    return allowed


@dataclass
class UnitRecord:
    digest: str
    files: dict[str, int]  # relative path -> bytes (a folder: how many files it holds)
    rows: int


@dataclass
class ExportState:
    format: str
    split: str
    where: list[str]
    columns: str          # digest of the column names and types
    batch: str
    source: str
    units: list[UnitRecord] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # files covering every unit (metadata)
    features: list[Any] = field(default_factory=list)  # as the dataset card lists them

    def same_export(self, other: ExportState) -> bool:
        """Same format, split and filters: units can be compared and kept."""
        return (self.format, self.split, self.where) == (other.format, other.split, other.where)

    def files(self) -> set[str]:
        return {f for u in self.units for f in u.files} | set(self.extra)

    @classmethod
    def load(cls, root: Path, split: str, allowed: Callable[[str], bool]) -> ExportState | None:
        """The state recorded in ``root``, or None. It is untrusted text: a state naming any
        file ``allowed`` refuses (``../x``, an absolute path, another layout's name) is taken
        as no state at all, so nothing it lists is ever kept, renamed or removed."""
        raw = read_no_follow(root / state_file(split))
        return None if raw is None else cls.decode(raw, allowed)

    @classmethod
    def decode(cls, raw: bytes, allowed: Callable[[str], bool]) -> ExportState | None:
        try:
            data = orjson.loads(raw)
            state = cls(format=str(data["format"]), split=str(data["split"]),
                        where=[str(w) for w in data["where"]], columns=str(data["columns"]),
                        batch=str(data.get("batch", "")), source=str(data.get("source", "")),
                        units=[UnitRecord(str(u["digest"]),
                                          {str(f): int(n) for f, n in dict(u["files"]).items()},
                                          int(u["rows"]))
                               for u in data["units"]],
                        extra=[str(e) for e in data.get("extra", [])],
                        features=_features(data.get("features")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable: treated as no state (the files then need --overwrite)
        if not all(allowed(name) for name in state.files()):
            return None
        return state

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "batchgen_export": FORMAT, "version": __version__, "format": self.format,
            "split": self.split, "where": self.where, "columns": self.columns,
            "batch": self.batch, "source": self.source,
            "rows": sum(u.rows for u in self.units),
            "units": [{"digest": u.digest, "files": u.files, "rows": u.rows} for u in self.units],
            "extra": self.extra, "features": self.features}
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    def save(self, root: Path) -> None:
        atomic_write(root, state_file(self.split), self.encode())


def on_disk(root: Path, relative: str) -> int | None:
    """A file's size, or how many entries a folder holds; None when it is not there (or is
    a symlink: never followed)."""
    path = root / relative
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            return sum(1 for _ in path.iterdir())
        return st.st_size if stat.S_ISREG(st.st_mode) else None
    except OSError:
        return None


def _features(value: Any) -> list[Any]:
    """A recorded feature list, or [] when it is not one (it only ever feeds the card)."""
    if not isinstance(value, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) for f in value):
        return []
    return value
