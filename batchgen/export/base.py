"""What every export format shares: the writer interface, units, and atomic file writes.

An export is cut into *units* (a WebDataset or Parquet shard, an ImageFolder subfolder), each
a run of consecutive rows. A format is one class with a few small methods: which files a unit
makes, how to write it from a stream of rows, and what to write once every unit is in place.
Every file is written under a temporary name and renamed into place, so an interrupted export
never leaves a half-written file under its final name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from batchgen.export.rows import ColumnType
from batchgen.export.scan import Item

__all__ = ["ExportFormat", "FormatWriter", "Unit", "atomic_write", "tmp_path"]


class ExportFormat(StrEnum):
    IMAGEFOLDER = "imagefolder"
    PARQUET = "parquet"
    WEBDATASET = "webdataset"


@dataclass
class Unit:
    """One run of consecutive rows, planned before anything is written: its position, how
    many rows, and a digest of them that says whether a unit already on disk holds the same."""

    index: int
    rows: int
    digest: str


class FormatWriter(Protocol):
    """One export format. Units are written from a stream of rows fitted to the schema, so
    no unit is ever held in memory, however many rows it has."""

    #: hand ``write_unit`` each unit's rows sorted by key (a tar's members sorted by name)
    sorted_keys: bool

    def begin(self) -> None:
        """Called once, before the first unit."""

    def unit_files(self, index: int, units: int) -> list[str]:
        """The files unit ``index`` of ``units`` is written to, relative to the export folder."""

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        """Write one unit's files; returns how many rows went in (a changed image is left out)."""

    def keep_row(self, index: int, item: Item) -> None:
        """A row of unit ``index``, kept from the earlier export, in order (for what lists
        every row)."""

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
