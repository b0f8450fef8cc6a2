"""What every export format shares: the ``Layout`` base class and its registry, units, and
atomic file writes.

An export is cut into *units* (a WebDataset or Parquet shard, an ImageFolder subfolder), each
a run of consecutive rows. A format is one subclass of ``Layout`` that carries its own rules:
its name, where a unit ends, what it refuses, which files a unit makes, how to write one from
a stream of rows, what to write once every unit is in place, how its files are named, and how
to load it. Defining the class registers it: the exporter, ``ExportFormat`` and the command
line find every format there, so adding a format is adding a class (and importing its module
in ``formats.py``). Every file is written under a temporary name and renamed into place, so
an interrupted export never leaves a half-written file under its final name.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from batchgen.export.rows import ColumnType
from batchgen.export.scan import Item, Scan

if TYPE_CHECKING:
    from batchgen.export.images import ImageSource

__all__ = ["DEFAULT_SHARD_SIZE", "MAX_SHARD_BYTES", "Layout", "LayoutOptions", "Unit",
           "atomic_write", "layouts", "tmp_path"]

#: WebDataset samples per shard, unless told
DEFAULT_SHARD_SIZE = 10_000
#: image bytes per Parquet shard, at most, unless told
MAX_SHARD_BYTES = 500 * 1000 * 1000

#: where a unit ends: (rows so far, image bytes so far, the next row's image bytes) -> full
UnitRule = Callable[[int, int, int], bool]


@dataclass(frozen=True)
class LayoutOptions:
    """The options a layout may read (the rest of ``ExportOptions`` is the exporter's)."""

    shard_size: int = DEFAULT_SHARD_SIZE
    parquet_shard_bytes: int = MAX_SHARD_BYTES
    link: bool = False   # hard-link images to the batch's (read-only) instead of copying


@dataclass
class Unit:
    """One run of consecutive rows, planned before anything is written: its position, how
    many rows, and a digest of them that says whether a unit already on disk holds the same."""

    index: int
    rows: int
    digest: str


class Layout:
    """One export format. Units are written from a stream of rows fitted to the schema, so
    no unit is ever held in memory, however many rows it has.

    A subclass sets ``name`` (the ``--format`` value), ``noun`` (what a unit is called in the
    report), ``loader`` (the line that loads it, ``{to}`` the folder) and ``sorted_keys``.
    """

    name: ClassVar[str]
    noun: ClassVar[str] = "shard"
    loader: ClassVar[str]
    #: hand ``write_unit`` each unit's rows sorted by key (a tar's members sorted by name)
    sorted_keys: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[Layout]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Layout._registry[cls.name] = cls

    def __init__(self, root: Path, split: str, schema: dict[str, ColumnType], captions: bool,
                 images: ImageSource, options: LayoutOptions = LayoutOptions()) -> None:
        self.root = root
        self.split = split
        self.schema = schema
        self.captions = captions
        self.images = images
        self.options = options
        #: what happened to the images, for the report ("hard-linked", "copied", ...)
        self.counts: Counter[str] = Counter()

    @classmethod
    def unit_rule(cls, options: LayoutOptions) -> UnitRule:
        """Whether a unit is full before the next row."""
        size = options.shard_size
        return lambda rows, _bytes, _next: rows >= size

    @classmethod
    def check(cls, found: Scan) -> None:
        """Refuse, with a UsageError that says what to do, rows this layout cannot hold."""

    @classmethod
    def file_pattern(cls, split: str) -> re.Pattern[str]:
        """The names (relative to the export folder) this layout gives its files: the only
        names an export ever removes or renames, whatever a state file lists."""
        raise NotImplementedError

    @classmethod
    def data_files(cls, split: str) -> str:
        """The glob, relative to the export folder, the dataset card names for the split."""
        raise NotImplementedError

    def card_features(self, formats: set[str]) -> list[dict[str, object]]:
        """The rows' features as a dataset card's ``dataset_info`` lists them, in the order
        ``datasets`` reads the columns (``formats``: the image formats in the export)."""
        return [{"name": "image", "dtype": "image"}, *value_features(self.schema)]

    def begin(self) -> None:
        """Called once, before the first unit."""

    def unit_files(self, index: int, units: int) -> list[str]:
        """The files unit ``index`` of ``units`` is written to, relative to the export folder."""
        raise NotImplementedError

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        """Write one unit's files; returns how many rows went in (a changed image is left out)."""
        raise NotImplementedError

    def keep_row(self, index: int, item: Item) -> None:
        """A row of unit ``index``, kept from the earlier export, in order (for what lists
        every row)."""

    def finish(self, ok: bool) -> list[str]:
        """Put in place what covers every unit (metadata), if ``ok``; returns those files."""
        return []

    @classmethod
    def owned(cls, root: Path, split: str) -> list[Path]:
        """Files (or unit folders) of this format and split already in the export folder
        ``root``: those ``file_pattern`` names (hidden folders and symlinks are not looked in)."""
        pattern = cls.file_pattern(split)
        found = []
        for folder, dirs, files in os.walk(root):
            base = Path(folder)
            rel = base.relative_to(root)
            keep = []
            for name in dirs:
                path = (rel / name).as_posix()
                if pattern.fullmatch(path):
                    found.append(base / name)
                elif not name.startswith("."):
                    keep.append(name)
            dirs[:] = keep
            found += [base / n for n in files if pattern.fullmatch((rel / n).as_posix())]
        return sorted(found)


def layouts() -> dict[str, type[Layout]]:
    """Every registered layout by name."""
    return dict(Layout._registry)


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


def value_features(schema: dict[str, ColumnType]) -> list[dict[str, object]]:
    """Every column and the sidecar, as a card's feature list writes them."""
    return [*({"name": name, "dtype": kind.value} for name, kind in schema.items()),
            {"name": "sidecar", "dtype": "string"}]


def hf_features(schema: dict[str, ColumnType], image: str | None) -> dict[str, object]:
    """The Hugging Face ``Features`` of the rows, as ``datasets`` writes them."""
    features: dict[str, object] = {}
    if image is not None:
        features[image] = {"_type": "Image"}
    for name, kind in schema.items():
        features[name] = {"dtype": kind.value, "_type": "Value"}
    features["sidecar"] = {"dtype": "string", "_type": "Value"}
    return features
