"""``batchgen view``: a static, offline viewer of a sweep (``index.html`` and one ``data.js``).

The page needs no server and no network: it opens from ``file://`` or any static host, shows
images by paths relative to itself, and while a run goes on it loads the batch's ``status.js``
(written by the runner) now and then to fill in cells as they finish. Data goes in a ``.js``
file because browsers refuse to fetch local JSON; repeated strings (prompts, LoRA sets) are
written once and referred to by number, so a 10,000-cell sweep stays a few megabytes.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from batchgen.errors import OutputError, UsageError
from batchgen.storage.guard import refuse_link, write_new
from batchgen.storage.live import STATUS_FILE, write_idle_status
from batchgen.view.choice import GridOptions, choose_axes
from batchgen.view.sweep import CellState, Sweep, load_sweep

__all__ = ["DATA_FILE", "INDEX_FILE", "ViewOptions", "ViewResult", "make_viewer", "view_data"]

INDEX_FILE = "index.html"
DATA_FILE = "data.js"
FORMAT = 1
_STATE_CODES = {CellState.DONE: "d", CellState.FAILED: "f", CellState.RUNNING: "r",
                CellState.PENDING: "p", CellState.NO_FILE: "m"}


@dataclass
class ViewOptions:
    to: Path | None = None   # default: the batch folder's view/


@dataclass
class ViewResult:
    sweep: Sweep
    folder: Path
    index: Path
    data: Path
    data_bytes: int
    cells: int
    status_written: bool
    warnings: list[str] = field(default_factory=list)


def make_viewer(target: str | Path | Sweep, options: ViewOptions | None = None) -> ViewResult:
    """Write the viewer of a batch (a manifest, a batch folder or a loaded Sweep)."""
    options = options or ViewOptions()
    sweep = target if isinstance(target, Sweep) else load_sweep(target, details=True)
    out = Path(options.to) if options.to is not None else sweep.folder / "view"
    if options.to is None:  # the batch folder's own view/: never a link to elsewhere
        refuse_link(out, "viewer folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--to {out}: that is a file; give a folder for the viewer")
    command = ["batchgen", "view", sweep.target if isinstance(sweep.target, str)
               else str(Path(sweep.target).resolve())]
    if options.to is not None:
        command += ["--to", str(out.resolve())]
    data = view_data(sweep, out, shlex.join(command))
    body = b"window.BATCHGEN_VIEW = " + orjson.dumps(data) + b";\n"
    page = resources.files("batchgen.view").joinpath("assets", INDEX_FILE).read_bytes()
    try:
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / DATA_FILE, body)
        _atomic(out / INDEX_FILE, page)
        status_written = write_idle_status(sweep.folder, sweep.batch) if sweep.folder.is_dir() else False
    except OSError as exc:
        raise OutputError.from_os_error(str(out), exc) from exc
    return ViewResult(sweep, out, out / INDEX_FILE, out / DATA_FILE, len(body), len(sweep.cells),
                      status_written)


def view_data(sweep: Sweep, out: Path, command: str) -> dict[str, Any]:
    """Everything the page shows, as compact JSON: axes with their values' labels, defaults
    that fit a sweep, and one short record per cell."""
    try:
        choice = choose_axes(sweep, GridOptions())
        defaults = {"x": choice.x, "y": choice.y, "super": choice.pages[:2]}
    except UsageError:
        defaults = {"x": None, "y": None, "super": []}
    strings: dict[str, int] = {}
    lora_sets: dict[bytes, int] = {}
    cells = []
    for cell in sweep.cells:
        item: dict[str, Any] = {"j": cell.job_id, "c": list(cell.coords), "s": _STATE_CODES[cell.state]}
        if cell.file:
            item["f"] = cell.file
        if cell.size:
            item["w"], item["h"] = cell.size
        if cell.label:
            item["lb"] = cell.label
            item["r"] = cell.reason or ""
        d = cell.details or {}
        prompt = d.get("prompt")
        if prompt is not None:
            item["p"] = strings.setdefault(prompt, len(strings))
        loras = d.get("loras")
        if loras:
            key = orjson.dumps(loras)
            item["l"] = lora_sets.setdefault(key, len(lora_sets))
        for short, name in (("sa", "seed_asked"), ("su", "seed"), ("t", "task_id"), ("n", "name"),
                            ("cp", "caption")):
            if d.get(name) is not None:
                item[short] = d[name]
        extra = {k: d[k] for k in ("image_url", "strength", "mask") if k in d}
        if extra:
            item["x"] = extra
        timings = d.get("timings")
        if timings:
            item["tm"] = [timings.get("submitted"), timings.get("started"), timings.get("finished"),
                          timings.get("downloaded"), timings.get("polls")]
        image = d.get("image")
        if image:
            item["w"], item["h"] = image.get("width") or item.get("w"), image.get("height") or item.get("h")
            item["b"] = image.get("bytes")
        cells.append(item)
    status = sweep.status or {}
    counts = sweep.counts()
    return {
        "format": FORMAT, "batch": sweep.batch, "command": command,
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "from_manifest": sweep.from_manifest,
        "batch_path": _relative(sweep.folder, out),
        "status_file": STATUS_FILE,
        "status": {"run": status.get("run"), "seq": status.get("seq", 0)},
        "complete": counts[CellState.DONE] == len(sweep.cells) and sweep.from_manifest,
        "axes": [{"name": a.name, "values": [v.label for v in a.values]} for a in sweep.axes],
        "defaults": defaults,
        "strings": list(strings),
        "loras": [orjson.loads(key) for key in lora_sets],
        "unplaced": sweep.unplaced, "duplicates": sweep.duplicates,
        "cells": cells,
    }


def _relative(folder: Path, out: Path) -> str:
    """The batch folder as seen from the viewer's folder, with forward slashes (a URL path)."""
    rel = os.path.relpath(Path(folder).resolve(), Path(out).resolve())
    return Path(rel).as_posix()


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
