"""What every export format shares: the writer interface, units, and atomic file writes.

An export is cut into *units* (a WebDataset or Parquet shard, an ImageFolder subfolder), each
a run of consecutive rows. A format is one class with a few small methods: where a unit ends,
which files it makes, how to write it, and what to write once every unit is in place. Every file is written under a temporary name and renamed into place, so
an interrupted export never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import orjson

from batchgen.export.rows import ColumnType
from batchgen.export.scan import Item

__all__ = ["ExportFormat", "FormatWriter", "Unit", "atomic_write", "tmp_path"]


class ExportFormat(StrEnum):
    IMAGEFOLDER = "imagefolder"
    PARQUET = "parquet"
    WEBDATASET = "webdataset"


@dataclass
class Unit:
    """One run of consecutive rows and the files made from it."""

    index: int
    items: list[Item]
    digest: str = ""

    def seal(self, columns_digest: str) -> None:
        """The digest says whether a unit already on disk holds exactly these rows."""
        h = hashlib.sha256(columns_digest.encode())
        for it in self.items:
            h.update(orjson.dumps([it.key, it.sha256, it.stamp, it.row, it.sidecar]))
        self.digest = h.hexdigest()


class FormatWriter(Protocol):
    """One export format. ``schema`` is the columns and types every row is fitted to."""

    def unit_files(self, index: int, units: int) -> list[str]:
        """The files unit ``index`` of ``units`` is written to, relative to the export folder."""

    def begin(self) -> None:
        """Called once, before the first unit."""

    def write_unit(self, unit: Unit, units: int) -> int:
        """Write one unit's files; returns how many rows went in (a changed image is left out)."""

    def placed(self, unit: Unit) -> None:
        """Called for every unit once its files are there, written now or kept from before."""

    def finish(self, ok: bool) -> list[str]:
        """Put in place what covers every unit (metadata), if ``ok``; returns those files."""

    def owned(self) -> list[Path]:
        """Files of this format and split already in the export folder."""


def tmp_path(root: Path) -> Path:
    """A fresh temporary name in the export's own ``.batchgen-tmp`` folder (same filesystem)."""
    folder = root / ".batchgen-tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / uuid.uuid4().hex


def atomic_write(root: Path, relative: str, data: bytes) -> None:
    target = root / relative
    tmp = tmp_path(root)
    try:
        tmp.write_bytes(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def place(root: Path, tmp: Path, relative: str) -> None:
    """Rename a finished temporary file to its final name."""
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def hf_features(schema: dict[str, ColumnType], image: str | None) -> dict[str, object]:
    """The Hugging Face ``Features`` of the rows, as ``datasets`` writes them."""
    features: dict[str, object] = {}
    if image is not None:
        features[image] = {"_type": "Image"}
    for name, kind in schema.items():
        features[name] = {"dtype": kind.value, "_type": "Value"}
    features["sidecar"] = {"dtype": "string", "_type": "Value"}
    return features
