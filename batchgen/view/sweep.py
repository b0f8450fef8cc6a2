"""A batch seen as a sweep: every job placed on its axes, each axis's values in the order written.

The axes are the names in the jobs' ``axes`` records (what the matrix varied), plus
``replica`` when a request was asked for more than once. Values keep the order the sweep was
written in, as its author chose it: a list as listed, a range as it runs, a data file in file
order. Given a manifest, that order is read from its axes (so an exclude cannot disturb it),
and every job it expands to is a cell (pending ones too); given only a batch folder, the jobs
its ledger records, each value where the first job (by job index) that has it puts it. Values
only an include cell has come after the written ones, unset last. Reads only: never locks,
never writes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from batchgen.errors import UsageError
from batchgen.job import JobState
from batchgen.safetext import clean_text
from batchgen.storage.results import JobResult, join, recorded

__all__ = ["LORA_AXIS", "Cell", "CellState", "Sweep", "SweepAxis", "Value", "load_sweep",
           "value_label"]

LORA_AXIS = "loras"
REPLICA_AXIS = "replica"
_SIZE = re.compile(r"(\d+)\*(\d+)")


class CellState(StrEnum):
    """What a grid or viewer shows in a cell; the value is the word people read."""

    DONE = "done"
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"
    NO_FILE = "file missing"   # recorded done, but the image is not on disk
    NO_JOB = "no job"          # no job of the batch has these values


@dataclass(frozen=True, slots=True)
class Value:
    """One value of an axis: ``key`` tells values apart (canonical JSON), ``label`` is shown."""

    key: str
    label: str
    raw: Any


@dataclass(slots=True)
class SweepAxis:
    name: str
    values: list[Value]

    @property
    def varying(self) -> bool:
        return len(self.values) > 1

    def find(self, text: str) -> int:
        """The index of the value a person typed: its label, or the same number."""
        for i, value in enumerate(self.values):
            if value.label == text or value.key == text:
                return i
        number = _as_number(text)
        if number is not None:
            for i, value in enumerate(self.values):
                if _as_number(value.raw) == number:
                    return i
        shown = ", ".join(v.label for v in self.values[:12])
        more = f" (and {len(self.values) - 12} more)" if len(self.values) > 12 else ""
        raise UsageError(f"axis {self.name!r} has no value {text!r}; its values: {shown}{more}")


@dataclass(slots=True)
class Cell:
    """One job on the sweep: where it sits (a value index per axis) and what became of it."""

    job_id: str
    coords: tuple[int, ...]
    state: CellState
    file: str | None = None         # the image, relative to the batch folder
    size: tuple[int, int] | None = None  # width, height as requested
    label: str | None = None        # why it failed, as failures are counted
    reason: str | None = None
    details: dict[str, Any] | None = None  # what the viewer shows (``load_sweep(details=True)``)


@dataclass
class Sweep:
    """A batch's jobs on their axes. ``cells`` in reading order; ``axes`` in matrix order."""

    batch: str | None
    folder: Path
    target: Path | str  # what named the batch: a manifest, a folder, or a store URL
    from_manifest: bool
    axes: list[SweepAxis]
    cells: list[Cell]
    unplaced: int = 0     # recorded jobs that cannot say their axes (no sidecar, no spec)
    duplicates: int = 0   # jobs at the same place as an earlier one (kept: the first)
    status: dict[str, Any] | None = field(default=None, repr=False)

    def axis_index(self, name: str) -> int:
        for i, axis in enumerate(self.axes):
            if axis.name == name:
                return i
        from batchgen.manifest.fields import did_you_mean

        names = [a.name for a in self.axes]
        raise UsageError(f"the batch has no axis {name!r}{did_you_mean(name, names)} "
                         f"(its axes: {', '.join(names) or 'none'})")

    def varying(self) -> list[SweepAxis]:
        return [axis for axis in self.axes if axis.varying]

    def counts(self) -> dict[CellState, int]:
        found = {state: 0 for state in CellState}
        for cell in self.cells:
            found[cell.state] += 1
        return found


def value_label(raw: Any) -> str:
    """How a value reads on a sheet: numbers without a trailing ``.0``, rows as ``k=v``."""
    if raw is None:
        return "(unset)"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float):
        return repr(raw)[:-2] if raw.is_integer() and abs(raw) < 1e16 else repr(raw)
    if isinstance(raw, dict):
        return ", ".join(f"{k}={value_label(v)}" for k, v in raw.items())
    if isinstance(raw, list):
        return orjson.dumps(raw).decode()
    return str(raw)


def load_sweep(target: str | Path, *, details: bool = False) -> Sweep:
    """The sweep of the batch named by a manifest file, a batch folder or an object-store
    URL, opened as every command opens a batch (``storage/batch.py``).

    ``details`` also gathers what the viewer shows per cell (prompt, seeds, LoRAs, task id,
    timings), reading each done job's sidecar. A batch in a store has its done jobs' images
    and sidecars fetched into a local cache folder first (``cached_copy``), kept between calls.
    """
    from batchgen.storage.batch import open_batch

    opened = open_batch(target, need_ledger=False)
    manifest, ledger = opened.manifest, opened.ledger
    folder = opened.folder if opened.store is None else cached_copy(opened)
    from batchgen.storage.live import read_status

    # before the ledger's records are read: a viewer replays after it
    status = read_status(folder) if opened.store is None else None
    if manifest is not None:
        results: Iterable[JobResult] = (
            join(manifest.jobs(), ledger) if ledger is not None
            else (JobResult(job, None) for job in manifest.jobs()))
        total = None
    else:
        assert ledger is not None
        results = (r for r in recorded(folder, ledger) if not r.record.gone)
        total = sum(1 for rec in ledger.records.values() if not rec.gone)
    builder = _Builder(folder, details)
    if manifest is not None:
        builder.written_order(manifest.axes)
    for result in results:
        builder.add(result)
    shown = Path(target) if opened.store is None else opened.location  # a URL stays a URL
    sweep = builder.finish(opened.batch, shown, manifest is not None)
    sweep.status = status
    if total is not None:
        sweep.unplaced = total - builder.seen
    return sweep


def cached_copy(opened: Any) -> Path:
    """A local copy of a store batch's done images and sidecars, for drawing and viewing:
    ``$XDG_CACHE_HOME/batchgen/<url as a name>`` (``~/.cache`` without it). Files already
    there at the listed size are not fetched again."""
    import os

    from batchgen.storage.mirror import state_folder

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(cache) / "batchgen" / state_folder(opened.location, {"XDG_STATE_HOME": "."}).name
    store, wanted = opened.store, []
    for rec in opened.ledger.records.values():
        if rec.state != JobState.DONE or not rec.file or rec.gone:
            continue
        size = store.size(rec.file)
        if size is None:
            continue  # not in the store: drawn as "file missing"
        image = folder / rec.file
        if not (image.is_file() and image.stat().st_size == size):
            wanted += [rec.file, str(Path(rec.file).with_suffix(".json"))]
    for start in range(0, len(wanted), 256):
        for relative, data in store.read_many(wanted[start:start + 256]).items():
            if data is not None:
                path = folder / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Builder:
    """Collects cells with raw values first, then orders each axis and numbers the cells."""

    def __init__(self, folder: Path, details: bool) -> None:
        self.folder = folder
        self.details = details
        self.names: dict[str, None] = {}          # axis names in first-seen (matrix) order
        self.values: dict[str, dict[str, Any]] = {}  # axis -> key -> raw
        self.first: dict[str, dict[str, tuple[float, int]]] = {}  # axis -> key -> (job index, seen)
        self.written: dict[str, dict[str, int]] = {}  # axis -> key -> place in the manifest
        self.first_when: tuple[float, int] = (math.inf, 0)
        self.first_names: tuple[str, ...] = ()  # the axes of the first job (by job index)
        self.rows: list[tuple[dict[str, str], Cell]] = []
        self.seen = 0
        self._keys: dict[str, str] = {}  # interned canonical keys of scalar values

    def _key(self, raw: Any) -> str:
        if isinstance(raw, (dict, list)):
            return orjson.dumps(raw, option=orjson.OPT_SORT_KEYS).decode()
        simple = f"{type(raw).__name__}:{raw}"
        key = self._keys.get(simple)
        if key is None:
            key = self._keys[simple] = orjson.dumps(raw).decode()
        return key

    def written_order(self, axes: Iterable[Any]) -> None:
        """Each axis's values as its manifest writes them (one pass over each axis alone,
        never the product)."""
        for axis in axes:
            for entry in axis:
                if not isinstance(entry, tuple):
                    continue  # a bad data line: the job pass reports it
                for name, raw in entry[1].items():
                    if name.endswith("_source"):
                        continue
                    order = self.written.setdefault(name, {})
                    order.setdefault(self._key(raw), len(order))

    def add(self, result: JobResult) -> None:
        self.seen += 1
        job = result.job
        when = (job.index if job.index >= 0 else math.inf, self.seen)
        axes = {k: v for k, v in job.axes.items()
                if not (k.endswith("_source") and k[:-7] in job.axes)}
        if job.replica:
            axes[REPLICA_AXIS] = job.replica
        keys: dict[str, str] = {}
        for name, raw in axes.items():
            self.names.setdefault(name, None)
            key = self._key(raw)
            values = self.values.get(name)
            if values is None:
                values = self.values[name] = {}
                self.first[name] = {}
            if key not in values:
                values[key] = raw
                self.first[name][key] = when
            elif when < self.first[name][key]:
                self.first[name][key] = when
            keys[name] = key
        if when < self.first_when:
            self.first_when, self.first_names = when, tuple(keys)
        cell = _cell(result, self.folder)
        if self.details:
            cell.details = _details(result, self.folder)
        self.rows.append((keys, cell))

    def finish(self, batch: str | None, target: Path | str, from_manifest: bool) -> Sweep:
        names = self._folded(list(self.names))
        if any(REPLICA_AXIS in keys for keys, _ in self.rows):
            self.values.setdefault(REPLICA_AXIS, {})[self._key(0)] = 0
        unset = self._key(None)
        axes: list[SweepAxis] = []
        for name in names:
            seen = self.values[name]
            if name != REPLICA_AXIS and any(name not in keys for keys, _ in self.rows):
                seen.setdefault(unset, None)  # an include cell that does not set this axis
            ordered = sorted(seen.items(), key=self._order(name))
            axes.append(SweepAxis(name, [Value(k, value_label(raw), raw) for k, raw in ordered]))
        position = [{v.key: i for i, v in enumerate(axis.values)} for axis in axes]
        zero = self._key(0)
        cells: list[Cell] = []
        taken: set[tuple[int, ...]] = set()
        duplicates = 0
        for keys, cell in self.rows:
            coords = tuple(position[i][keys.get(name, zero if name == REPLICA_AXIS else unset)]
                           for i, name in enumerate(names))
            if coords in taken:
                duplicates += 1
                continue
            taken.add(coords)
            cell.coords = coords
            cells.append(cell)
        self.rows = []
        cells.sort(key=lambda c: c.coords)
        return Sweep(batch=batch, folder=self.folder, target=target, from_manifest=from_manifest,
                     axes=axes, cells=cells, duplicates=duplicates)


    def _folded(self, names: list[str]) -> list[str]:
        """The axes without those only include cells set (a value each, unset everywhere
        else): as axes they would lay the sweep out on mostly empty sheets. They are folded
        away only when every job still has a place of its own."""
        matrix = set(self.written) if self.written else set(self.first_names)
        extra = [n for n in names if n not in matrix and n != REPLICA_AXIS]
        if not extra or len(extra) == len(names):
            return names
        kept = [n for n in names if n not in extra]
        places = {tuple(keys.get(n) for n in kept) for keys, _ in self.rows}
        return kept if len(places) == len(self.rows) else names

    def _order(self, name: str) -> Any:
        """Written values in their written place, the rest where their first job puts them,
        unset last; replicas by number."""
        written = self.written.get(name, {})
        first = self.first.get(name, {})
        inf = (math.inf, 0)

        def key(kv: tuple[str, Any]) -> tuple:
            k, raw = kv
            if name == REPLICA_AXIS:
                return (0, raw or 0, inf)
            if raw is None:
                return (2, 0, inf)
            place = written.get(k)
            return (0, place, inf) if place is not None else (1, 0, first.get(k, inf))
        return key


def _cell(result: JobResult, folder: Path) -> Cell:
    job, rec = result.job, result.record
    match = _SIZE.fullmatch(str(job.request.get("size", "")))
    size = (int(match[1]), int(match[2])) if match else None
    state = result.state
    cell = Cell(job.job_id, (), CellState.PENDING, size=size)
    if state == JobState.DONE:
        file = result.file
        if file and (folder / file).is_file():
            cell.state, cell.file = CellState.DONE, file
        else:
            cell.state, cell.file = CellState.NO_FILE, file
    elif state == JobState.FAILED and rec is not None:
        cell.state, cell.label = CellState.FAILED, rec.label
        cell.reason = clean_text(str(rec.get("reason", "")))
    elif state in (JobState.SUBMITTING, JobState.SUBMITTED, JobState.GENERATED):
        cell.state = CellState.RUNNING
    return cell


def _details(result: JobResult, folder: Path) -> dict[str, Any]:
    """What a person asks of a cell: the request as sent and, once done, what came back."""
    job, rec = result.job, result.record
    request = job.request
    info: dict[str, Any] = {"prompt": request.get("prompt"), "seed_asked": request.get("seed"),
                            "size": request.get("size"), "loras": request.get("loras") or [],
                            "name": job.name}
    for key in ("image_url", "strength", "mask"):
        if request.get(key) is not None:
            info[key] = request[key]
    if job.caption is not None:
        info["caption"] = job.caption
    if rec is not None and rec.task_id:
        info["task_id"] = rec.task_id
    if result.state == JobState.DONE:
        sidecar = result.read_sidecar(folder)
        if sidecar is not None:
            info["seed"] = sidecar.seed
            info["task_id"] = sidecar.task_id or info.get("task_id")
            t = sidecar.timings
            info["timings"] = {"submitted": t.submitted, "started": t.started,
                               "finished": t.finished, "downloaded": t.downloaded, "polls": t.polls}
            info["image"] = {"format": sidecar.image.format, "width": sidecar.image.width,
                             "height": sidecar.image.height, "bytes": sidecar.image.bytes}
    return info


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
