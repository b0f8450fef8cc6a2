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
import tempfile
from collections import Counter
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
from batchgen.export.card import CARD, CardFacts, write_card
from batchgen.export.dedupe import NEAR_DISTANCE, Dedupe, Duplicate, drop_duplicates
from batchgen.export.files import clean_relative, inside
from batchgen.export.scan import Entry, Item, Omission, Omitted, Scan, check_where, scan
from batchgen.export.stage import Stage, finish_swap
from batchgen.export.state import ExportState, UnitRecord, batchgen_names, on_disk, state_file
from batchgen.job import JobState
from batchgen.storage.store import is_store_url
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
    to: Path | str   # a local folder, or an object-store URL (s3://bucket/prefix)
    split: str = "train"
    where: Sequence[str] = ()
    overwrite: bool = False
    link: bool = False   # ImageFolder: hard links to the batch's images (made read-only)
    dedupe: Dedupe | str | None = None   # "exact" or "near": drop duplicate images
    dedupe_distance: int = NEAR_DISTANCE   # near: pHash bits (of 64) that may differ
    shard_size: int = DEFAULT_SHARD_SIZE
    parquet_shard_bytes: int = MAX_SHARD_BYTES  # images per Parquet shard, at most

    def layout_options(self) -> LayoutOptions:
        return LayoutOptions(shard_size=self.shard_size,
                             parquet_shard_bytes=self.parquet_shard_bytes, link=self.link)


@dataclass
class ExportReport:
    """What an export did, as data: the CLI words it (``render_export``)."""

    batch: str
    folder: Path | str   # the batch folder, or the store URL the batch was read from
    to: Path | str
    format: str
    split: str
    where: list[str]
    exported: int = 0
    filtered_out: int = 0
    not_done: dict[str, int] = field(default_factory=dict)   # job state -> count
    not_in_manifest: int = 0
    problems: dict[Omission, int] = field(default_factory=dict)
    examples: dict[Omission, str] = field(default_factory=dict)
    omitted: list[Omitted] = field(default_factory=list)   # every job left out: why, job, path
    dedupe: str | None = None
    dedupe_distance: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)   # rows dropped as duplicates
    units: int = 0
    resumed: int = 0   # units an export cut short had finished, not written again
    finished_swap: bool = False   # an earlier export's swap, cut short, was finished first
    kept: int = 0
    written: int = 0
    removed: int = 0
    rewrote_all: str | None = None   # why nothing could be kept from an earlier export
    images: dict[str, int] = field(default_factory=dict)   # "copied", "hard-linked", ... -> count
    downloaded: int = 0   # images fetched from an object store
    elapsed: float = 0.0
    files: list[str] = field(default_factory=list)
    uploaded: int = 0   # to an object store: objects put
    card: str | None = None   # the dataset card written, or None (a README.md not batchgen's)


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


def _previous(options: ExportOptions, new: ExportState, kind: type[Layout],
              report: ExportReport, old: ExportState | None) -> ExportState | None:
    """The earlier export whose units may be kept, or None; refuses to clobber without
    --overwrite."""
    owned = kind.owned(options.to, options.split)
    if options.overwrite:
        if old is not None or owned:
            report.rewrote_all = "--overwrite"
        return None
    if old is None:
        if owned:
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
        report.rewrote_all = ("the columns, the shard size or how images are stored changed "
                              "(new axis values, captions or LoRA slots, --link)")
        return None
    return old


def export_batch(target: str | Path, options: ExportOptions,
                 progress: Progress | None = None) -> ExportReport:
    """Export the done jobs of the batch named by a manifest, a batch folder or an object-store
    URL (``s3://bucket/prefix``: its ledger copies, sidecars and images read from there).

    The export is written aside and swapped in whole when complete; one cut short is resumed
    (or its swap finished) by the same call."""
    started = time.monotonic()
    if str(options.format) not in layouts():
        raise UsageError(f"--format {options.format}: the formats are {', '.join(sorted(layouts()))}")
    if is_store_url(str(options.to)):
        return _to_store(target, options, progress)
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
    root = options.to
    root.mkdir(parents=True, exist_ok=True)
    allowed = batchgen_names(options.split)
    report.finished_swap = finish_swap(root, options.split, allowed)
    stage = Stage(root, options.split)
    stage.open()
    spill = tmp_path(root)
    def source() -> ImageSource:
        return StoreImages(results.store) if results.store is not None else LocalImages()

    images = source()
    try:
        tick = (lambda n: progress(ExportPhase.SCAN, n, None)) if progress else None
        found = scan(results, where, spill, tick)
        check_where(where, found)
        report.filtered_out = found.filtered_out
        if not found.rows:
            _left_out(report, found.omitted)
            raise UsageError(_nothing(report, counts.get(JobState.DONE, 0)))
        if options.dedupe:
            mode = _dedupe_mode(options.dedupe)
            report.dedupe, report.dedupe_distance = mode.value, (
                options.dedupe_distance if mode is Dedupe.NEAR else 0)
            report.duplicates = drop_duplicates(found, mode, options.dedupe_distance, source(),
                                                spill)
        kind = layout(options.format)
        kind.check(found)
        writer = kind(stage.folder, options.split, found.columns.schema(),
                      found.columns.captions, images, options.layout_options())
        _write(results, options, found, kind, writer, stage, report, progress)
        report.downloaded = images.fetched
        _left_out(report, found.omitted + images.omitted)
        facts = CardFacts(results.batch,  # a local folder by its name: no path of this machine
                          results.source if results.store is not None else results.folder.name,
                          results.manifest.path if results.manifest is not None else None,
                          {s.value: n for s, n in counts.items() if n}, found.about,
                          report.exported, options.format, options.split, report.where,
                          _dropped(report))
        report.card = CARD if write_card(root, facts) else None
    finally:
        spill.unlink(missing_ok=True)
        shutil.rmtree(root / ".batchgen-tmp", ignore_errors=True)
        shutil.rmtree(stage.folder / ".batchgen-tmp", ignore_errors=True)
    report.elapsed = time.monotonic() - started
    return report


def _to_store(target: str | Path, options: ExportOptions,
              progress: Progress | None) -> ExportReport:
    """The export made in a local working folder, then put in the store (``publish``)."""
    from batchgen.export.publish import fetch_card, publish

    url = str(options.to).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="batchgen-export-") as work:
        fetch_card(url, Path(work))
        report = export_batch(target, dataclasses.replace(options, to=Path(work), overwrite=True),
                              progress)
        report.rewrote_all = None
        report.uploaded, report.removed = publish(Path(work), url, options.split, report.files)
    report.to = url
    return report


def _left_out(report: ExportReport, omitted: list[Omitted]) -> None:
    report.omitted = omitted
    report.problems = dict(Counter(o.why for o in omitted))
    report.examples = {}
    for o in omitted:
        report.examples.setdefault(o.why, o.path)


def _dropped(report: ExportReport) -> str | None:
    if not report.dedupe:
        return None
    how = ("the same bytes" if report.dedupe == "exact"
           else f"a pHash within {report.dedupe_distance} bits")
    return (f"{len(report.duplicates):,} duplicate image(s) ({how} as an earlier one) were "
            f"dropped by `--dedupe {report.dedupe}`, the first of each group kept")


def _dedupe_mode(value: str) -> Dedupe:
    try:
        return Dedupe(str(value))
    except ValueError:
        raise UsageError(f"--dedupe {value}: exact or near") from None


def _nothing(report: ExportReport, done: int) -> str:
    if done and report.where:
        return f"nothing to export: none of the {done} done jobs matches {' '.join(report.where)}"
    if done:
        return f"nothing to export: the {done} done jobs' files are missing from {report.folder}"
    left = ", ".join(f"{n} {s}" for s, n in sorted(report.not_done.items())) or "no jobs"
    return f"nothing to export: no job of batch {report.batch} is done yet ({left})"


def _write(results: BatchResults, options: ExportOptions, found: Scan, kind: type[Layout],
           writer: Layout, stage: Stage, report: ExportReport, progress: Progress | None) -> None:
    root = options.to
    schema = found.columns.schema()
    layout_key = orjson.dumps([options.format, options.shard_size, options.parquet_shard_bytes,
                               "link" if options.link else "copy",
                               report.dedupe, report.dedupe_distance,
                               [[k, v.value] for k, v in schema.items()]])
    new = ExportState(format=options.format, split=options.split, where=report.where,
                      columns=hashlib.sha256(layout_key).hexdigest()[:16], batch=results.batch,
                      source=results.source if results.store is not None
                      else str(results.folder.absolute()))
    allowed = batchgen_names(options.split)
    recorded = ExportState.load(root, options.split, allowed)
    old = _previous(options, new, kind, report, recorded)
    staged = stage.progress(allowed)
    if staged is None or not staged.same_export(new) or staged.columns != new.columns:
        stage.clear()
        staged = None
    units = _plan(found, writer.unit_rule(options.layout_options()), new.columns)
    report.units = len(units)
    fit = found.columns.fit
    sources = [(stage.folder, staged, True), (root, old, False)]
    writer.begin()
    ok = False
    try:
        entries = found.entries()
        done = 0
        for unit in units:
            chunk = itertools.islice(entries, unit.rows)
            _place(unit, len(units), chunk, found, fit, schema, writer, sources, new, stage.folder,
                   report)
            stage.save_progress(new)
            done += unit.rows
            if progress is not None:
                progress(ExportPhase.WRITE, done, found.rows)
        ok = True
    finally:
        new.extra = writer.finish(ok)
    new.features = writer.card_features(found.columns.formats)
    report.images = dict(writer.counts)
    keep = new.files()
    stale = ({p.relative_to(root).as_posix() for p in kind.owned(root, options.split)}
             | (recorded.files() if recorded is not None else set())) - keep
    report.removed = len(stale)
    new.save(stage.folder)
    stage.swap(sorted(keep) + [state_file(options.split)], sorted(stale), allowed)
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


def _same(before: UnitRecord | None, unit: Unit, names: list[str], folder: Path) -> bool:
    return (before is not None and before.digest == unit.digest
            and len(before.files) == len(names)
            and all(on_disk(folder, f) == n for f, n in before.files.items()))


def _place(unit: Unit, units: int, chunk: Iterator[Entry], found: Scan,
           fit: Callable[[dict, dict], dict], schema: dict, writer: Layout,
           sources: list[tuple[Path, ExportState | None, bool]], new: ExportState,
           staging: Path, report: ExportReport) -> None:
    """Keep the unit when the stage (a run cut short) or the earlier export holds the same
    rows; else write it into the stage."""
    names = writer.unit_files(unit.index, units)

    def fitted(items: Iterator[Item]) -> Iterator[Item]:
        for item in items:
            item.row = fit(item.row, schema)
            yield item

    for folder, state, in_stage in sources:
        before = (state.units[unit.index]
                  if state is not None and unit.index < len(state.units) else None)
        if before is None or not _same(before, unit, names, folder):
            continue
        for was, now in zip(before.files, names):
            if in_stage:
                if was != now:  # a shard count in the name changed: same bytes, new name
                    os.replace(inside(staging, was), inside(staging, now))
            else:
                _link_into(inside(folder, was), inside(staging, now))
        for item in fitted(e.item() for e in chunk):
            writer.keep_row(unit.index, item)
        rows = before.rows
        if in_stage:
            report.resumed += 1
        else:
            report.kept += 1
        break
    else:
        if writer.sorted_keys:  # keys and offsets only: a shard's rows are read back in order
            offsets = [offset for _, offset in sorted((e.key, e.offset) for e in chunk)]
            items = found.load(offsets)
        else:
            items = (e.item() for e in chunk)
        rows = writer.write_unit(unit.index, units, fitted(items))
        report.written += 1
    report.exported += rows
    new.units.append(UnitRecord(unit.digest, {n: on_disk(staging, n) or 0 for n in names}, rows))


def _link_into(source: Path, target: Path) -> None:
    """A unit of the earlier export into the stage: hard links of the export's own files (a
    folder's regular files one by one; a symlink is never followed)."""
    if os.path.lexists(target):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir() and not source.is_symlink():
        target.mkdir()
        for child in source.iterdir():
            if child.is_file() and not child.is_symlink():
                _link_file(child, target / child.name)
    else:
        _link_file(source, target)


def _link_file(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copyfile(source, target, follow_symlinks=False)
