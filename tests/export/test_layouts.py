"""A format is one class: defining a ``Layout`` subclass registers it, and ``export_batch``,
the report and the command line's choices find it there, with no branch to add elsewhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from batchgen.cli.main import _build_parser
from batchgen.cli.render import render_export
from batchgen.export import ExportFormat, ExportOptions, Layout, export_batch, layouts
from batchgen.export.base import atomic_write
from batchgen.export.scan import Item
from exportkit import make_folder


class RowsOnly(Layout):
    """A layout of the rows without images: one JSON Lines file per three rows."""

    name = "rows-only-test"
    noun = "part"
    loader = 'load_dataset("json", data_dir="{to}")'

    @classmethod
    def file_pattern(cls, split: str) -> re.Pattern[str]:
        return re.compile(re.escape(split) + r"-[0-9]+\.jsonl")

    @classmethod
    def data_files(cls, split: str) -> str:
        return f"{split}-*.jsonl"

    @classmethod
    def unit_rule(cls, options):  # type: ignore[no-untyped-def]
        return lambda rows, _bytes, _next: rows >= 3

    def unit_files(self, index: int, units: int) -> list[str]:
        return [f"{self.split}-{index}.jsonl"]

    def write_unit(self, index: int, units: int, items: Iterable[Item]) -> int:
        lines = [json.dumps(item.row) for item, data in self.images.checked(items) if data]
        atomic_write(self.root, self.unit_files(index, units)[0], "\n".join(lines).encode())
        self.counts["read"] += len(lines)
        return len(lines)


@pytest.fixture
def registered():
    yield RowsOnly
    Layout._registry.pop(RowsOnly.name)


def test_a_new_layout_class_is_all_a_new_format_needs(registered, tmp_path: Path) -> None:
    make_folder(tmp_path / "batch", 7)
    assert layouts()[RowsOnly.name] is RowsOnly
    report = export_batch(tmp_path / "batch", ExportOptions(RowsOnly.name, tmp_path / "out"))
    assert report.exported == 7 and report.units == 3 and report.images == {"read": 7}
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jsonl")) == [
        "train-0.jsonl", "train-1.jsonl", "train-2.jsonl"]
    assert "path: train-*.jsonl" in (tmp_path / "out" / "README.md").read_text()
    text = render_export(report, str(tmp_path / "batch"))
    assert "3 part(s) written" in text and 'load_dataset("json", data_dir=' in text
    choices = next(a for a in _build_parser()._subparsers._group_actions[0].choices["export"]._actions
                   if a.dest == "format").choices
    assert RowsOnly.name in choices


def test_the_bundled_formats_are_registered_and_named_by_export_format() -> None:
    assert {f.value for f in ExportFormat} >= {"imagefolder", "parquet", "webdataset"}
    assert set(layouts()) >= {f.value for f in ExportFormat}
