"""``export_batch``: a batch's done jobs into a dataset folder, in one of three layouts.

Every pass streams: the scan reads every done job's sidecar once (columns, types, row count,
what is missing) into a spill file; a cheap pass over the spill cuts the rows into units and
digests each; the write pass streams each unit whose rows changed since the last export to
the format's writer and keeps the rest, so no unit is ever held in memory. It reads what was paid for and never submits, never writes in the batch folder, and
never prints: progress and the report are data for the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import orjson

from batchgen.errors import UsageError
from batchgen.export.base import (DEFAULT_SHARD_SIZE, MAX_SHARD_BYTES, Layout, LayoutOptions,
                                  Unit, UnitRule, tmp_path)
from batchgen.export.formats import ExportFormat, layout, layouts
from batchgen.export.images import ImageSource, LocalImages, StoreImages
from batchgen.export.rows import Where
from batchgen.export.scan import Entry, Item, LeftOut, Scan, check_where, scan
from batchgen.export.state import ExportState, UnitRecord, on_disk
from batchgen.job import JobState
from batchgen.storage.results import BatchResults, open_results

__all__ = ["ExportOptions", "ExportPhase", "ExportReport", "export_batch"]

_SPLIT = re.compile(r"[A-Za-z0-9_-]+")


class ExportPhase(StrEnum):
    SCAN = "reading sidecars"
    WRITE = "writing"


Progress = Callable[[ExportPhase, int, "int | None"], None]


@dataclass
class ExportOptions:
    """What to export and where. ``where`` holds ``AXIS=VALUE`` filters, as on the command line."""

    format: ExportFormat | str   # a registered layout's name
    to: Path
    split: str = "train"
    where: Sequence[str] = ()
    overwrite: bool = False
    shard_size: int = DEFAULT_SHARD_SIZE
    parquet_shard_bytes: int = MAX_SHARD_BYTES  # images per Parquet shard, at most

    def layout_options(self) -> LayoutOptions:
        return LayoutOptions(shard_size=self.shard_size,
                             parquet_shard_bytes=self.parquet_shard_bytes)


@dataclass
class ExportReport:
    """What an export did, as data: the CLI words it (``render_export``)."""

    batch: str
    folder: Path | str   # the batch folder, or the store URL the batch was read from
    to: Path
    format: str
    split: str
    where: list[str]
    exported: int = 0
    filtered_out: int = 0
    not_done: dict[str, int] = field(default_factory=dict)   # job state -> count
    not_in_manifest: int = 0
    problems: dict[LeftOut, int] = field(default_factory=dict)
    examples: dict[LeftOut, str] = field(default_factory=dict)
    units: int = 0
    kept: int = 0
    written: int = 0
    removed: int = 0
    rewrote_all: str | None = None   # why nothing could be kept from an earlier export
    images: dict[str, int] = field(default_factory=dict)   # "copied", "hard-linked", ... -> count
    downloaded: int = 0   # images fetched from an object store
    elapsed: float = 0.0
    files: list[str] = field(default_factory=list)


def _writer(options: ExportOptions, found: Scan, images: ImageSource) -> Layout:
    kind = layout(options.format)
    kind.check(found)
    return kind(options.to, options.split, found.columns.schema(), found.columns.captions,
                images, options.layout_options())


def _check_target(results: BatchResults, options: ExportOptions) -> None:
    if not _SPLIT.fullmatch(options.split):
        raise UsageError(f"--split {options.split!r}: a split name is letters, digits, _ and -")
    if options.shard_size < 1:
        raise UsageError("--shard-size must be at least 1")
    to = options.to.absolute().resolve()
    if results.store is None:  # a batch in a store has no local folder to keep out of
        folder = results.folder.absolute().resolve()
        if to == folder or to.is_relative_to(folder / "images"):
            raise UsageError(f"--to {options.to}: export to a folder of its own, not into the "
                             f"batch folder {results.folder}")
    if to.exists() and not to.is_dir():
        raise UsageError(f"--to {options.to} is a file, not a folder")


def _previous(options: ExportOptions, new: ExportState, writer: Layout,
              report: ExportReport, old: ExportState | None) -> ExportState | None:
    """The earlier export whose units may be kept, or None; refuses to clobber without
    --overwrite."""
    if options.overwrite:
        if old is not None or writer.owned():
            report.rewrote_all = "--overwrite"
        return None
    if old is None:
        if writer.owned():
            raise UsageError(f"{options.to} already holds {options.format} files of split "
                             f"'{options.split}' that batchgen did not record; pass --overwrite "
                             f"to replace them, or export to another folder")
        return None
    if not old.same_export(new):
        was = f"a {old.format} export of split '{old.split}'" + (
            f" filtered by {', '.join(old.where)}" if old.where else "")
        raise UsageError(f"{options.to} holds {was}; pass --overwrite to replace it with this "
                         f"one, or export to another folder")
    if old.columns != new.columns:
        report.rewrote_all = ("the columns or the shard size changed (new axis values, captions "
                              "or LoRA slots)")
        return None
    return old


def export_batch(target: str | Path, options: ExportOptions,
                 progress: Progress | None = None) -> ExportReport:
    """Export the done jobs of the batch named by a manifest, a batch folder or an object-store
    URL (``s3://bucket/prefix``: its ledger copies, sidecars and images read from there)."""
    started = time.monotonic()
    if str(options.format) not in layouts():
        raise UsageError(f"--format {options.format}: the formats are {', '.join(sorted(layouts()))}")
    options = dataclasses.replace(options, format=str(options.format), to=Path(options.to))
    results = open_results(target)
    _check_target(results, options)
    where = Where.parse(options.where)
    report = ExportReport(results.batch, results.folder if results.store is None else results.source,
                          options.to, options.format, options.split, where.describe())
    counts = results.counts()
    report.not_done = {s.value: n for s, n in counts.items() if s != JobState.DONE and n}
    if results.manifest is not None:
        recorded = sum(1 for r in results.ledger.records.values() if r.state == JobState.DONE)
        report.not_in_manifest = recorded - counts.get(JobState.DONE, 0)
    options.to.mkdir(parents=True, exist_ok=True)
    spill = tmp_path(options.to)
    try:
        tick = (lambda n: progress(ExportPhase.SCAN, n, None)) if progress else None
        found = scan(results, where, spill, tick)
        check_where(where, found)
        report.filtered_out = found.filtered_out
        report.problems, report.examples = dict(found.problems), dict(found.examples)
        if not found.rows:
            raise UsageError(_nothing(report, counts.get(JobState.DONE, 0)))
        images = StoreImages(results.store) if results.store is not None else LocalImages()
        writer = _writer(options, found, images)
        _write(results, options, found, writer, report, progress)
        report.downloaded = images.fetched
    finally:
        spill.unlink(missing_ok=True)
        shutil.rmtree(options.to / ".batchgen-tmp", ignore_errors=True)
    report.elapsed = time.monotonic() - started
    return report


def _nothing(report: ExportReport, done: int) -> str:
    if done and report.where:
        return f"nothing to export: none of the {done} done jobs matches {' '.join(report.where)}"
    if done:
        return f"nothing to export: the {done} done jobs' files are missing from {report.folder}"
    left = ", ".join(f"{n} {s}" for s, n in sorted(report.not_done.items())) or "no jobs"
    return f"nothing to export: no job of batch {report.batch} is done yet ({left})"


def _write(results: BatchResults, options: ExportOptions, found: Scan, writer: Layout,
           report: ExportReport, progress: Progress | None) -> None:
    schema = found.columns.schema()
    layout = orjson.dumps([options.format, options.shard_size, options.parquet_shard_bytes,
                           [[k, v.value] for k, v in schema.items()]])
    new = ExportState(format=options.format, split=options.split, where=report.where,
                      columns=hashlib.sha256(layout).hexdigest()[:16], batch=results.batch,
                      source=results.source if results.store is not None
                      else str(results.folder.absolute()))
    recorded = ExportState.load(options.to, options.split)
    old = _previous(options, new, writer, report, recorded)
    units = _plan(found, writer.unit_rule(options.layout_options()), new.columns)
    report.units = len(units)
    fit = found.columns.fit
    writer.begin()
    ok = False
    try:
        entries = found.entries()
        done = 0
        for unit in units:
            chunk = itertools.islice(entries, unit.rows)
            _place(unit, len(units), chunk, found, fit, schema, writer, old, new, options.to, report)
            done += unit.rows
            if progress is not None:
                progress(ExportPhase.WRITE, done, found.rows)
        ok = True
    finally:
        new.extra = writer.finish(ok)
    report.images = dict(writer.counts)
    keep = new.files()
    stale = ({str(p.relative_to(options.to)) for p in writer.owned()}
             | (recorded.files() if recorded is not None else set())) - keep
    for name in sorted(stale):
        path = options.to / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        report.removed += 1
    new.save(options.to)
    report.files = sorted(keep)


def _plan(found: Scan, rule: UnitRule, columns: str) -> list[Unit]:
    """Cut the rows into units and digest each, reading the spill without parsing a row."""
    units: list[Unit] = []
    rows = size = 0
    digest = hashlib.sha256(columns.encode())
    for entry in found.entries():
        if rows and rule(rows, size, entry.size):
            units.append(Unit(len(units), rows, digest.hexdigest()))
            rows = size = 0
            digest = hashlib.sha256(columns.encode())
        digest.update(entry.line)
        rows += 1
        size += entry.size
    if rows:
        units.append(Unit(len(units), rows, digest.hexdigest()))
    return units


def _place(unit: Unit, units: int, chunk: Iterator[Entry], found: Scan,
           fit: Callable[[dict, dict], dict], schema: dict, writer: Layout,
           old: ExportState | None, new: ExportState, root: Path, report: ExportReport) -> None:
    """Keep the unit from the earlier export when its rows are the same, else write it."""
    names = writer.unit_files(unit.index, units)
    before = old.units[unit.index] if old is not None and unit.index < len(old.units) else None

    def fitted(items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            item.row = fit(item.row, schema)
            yield item

    if before is not None and before.digest == unit.digest and len(before.files) == len(names) \
            and all(on_disk(root, f) == n for f, n in before.files.items()):
        for was, now in zip(before.files, names):
            if was != now:  # a shard count in the name changed: same bytes, new name
                os.replace(root / was, root / now)
        for item in fitted(e.item() for e in chunk):
            writer.keep_row(unit.index, item)
        rows = before.rows
        report.kept += 1
    else:
        if writer.sorted_keys:  # keys and offsets only: a shard's rows are read back in order
            offsets = [offset for _, offset in sorted((e.key, e.offset) for e in chunk)]
            items = found.load(offsets)
        else:
            items = (e.item() for e in chunk)
        rows = writer.write_unit(unit.index, units, fitted(items))
        report.written += 1
    changed = unit.rows - rows
    if changed:
        report.problems[LeftOut.CHANGED] = report.problems.get(LeftOut.CHANGED, 0) + changed
        report.examples.setdefault(LeftOut.CHANGED, names[0])
    report.exported += rows
    new.units.append(UnitRecord(unit.digest, {n: on_disk(root, n) or 0 for n in names}, rows))
