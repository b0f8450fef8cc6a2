"""What an export folder already holds: ``.batchgen-export-<split>.json``, one per split.

It records the format, the filters, the columns and, per unit, a digest of its rows and the
files it made, so exporting again after more jobs finished keeps every unit whose rows did
not change and rewrites only the others. Written last (temp file and rename): an export cut
short leaves the previous state, whose digests then no longer match what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchgen._version import __version__
from batchgen.export.base import atomic_write

__all__ = ["ExportState", "UnitRecord", "state_file"]

FORMAT = 1


def state_file(split: str) -> str:
    return f".batchgen-export-{split}.json"


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

    def same_export(self, other: ExportState) -> bool:
        """Same format, split and filters: units can be compared and kept."""
        return (self.format, self.split, self.where) == (other.format, other.split, other.where)

    def files(self) -> set[str]:
        return {f for u in self.units for f in u.files} | set(self.extra)

    @classmethod
    def load(cls, root: Path, split: str) -> ExportState | None:
        try:
            data = orjson.loads((root / state_file(split)).read_bytes())
            return cls(format=data["format"], split=data["split"], where=list(data["where"]),
                       columns=data["columns"], batch=data.get("batch", ""),
                       source=data.get("source", ""),
                       units=[UnitRecord(u["digest"], dict(u["files"]), int(u["rows"]))
                              for u in data["units"]],
                       extra=list(data.get("extra", [])))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: treated as no state (the files then need --overwrite)

    def save(self, root: Path) -> None:
        data: dict[str, Any] = {
            "batchgen_export": FORMAT, "version": __version__, "format": self.format,
            "split": self.split, "where": self.where, "columns": self.columns,
            "batch": self.batch, "source": self.source,
            "rows": sum(u.rows for u in self.units),
            "units": [{"digest": u.digest, "files": u.files, "rows": u.rows} for u in self.units],
            "extra": self.extra}
        atomic_write(root, state_file(self.split),
                     orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def on_disk(root: Path, relative: str) -> int | None:
    """A file's size, or how many entries a folder holds; None when it is not there."""
    path = root / relative
    try:
        if path.is_dir():
            return sum(1 for _ in path.iterdir())
        return path.stat().st_size
    except OSError:
        return None
