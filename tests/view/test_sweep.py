"""A batch as a sweep: axes in matrix order and values in the order written, states per cell, folder or manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import UsageError
from batchgen.storage.ledger import Ledger
from batchgen.storage.results import recorded
from batchgen.view.sweep import CellState, load_sweep, value_label
from viewkit import LORAS, SWEEP, run_sweep


def test_axes_come_in_matrix_order_with_values_in_the_order_written(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    sweep = load_sweep(batch.manifest)
    assert [a.name for a in sweep.axes] == ["subject", "style", "loras"]
    assert [v.label for v in sweep.axes[2].values] == LORAS  # written 1.5, 0.25, 1, 0.5
    assert [v.label for v in sweep.axes[0].values] == ["fox", "owl", "forbidden fruit"]
    assert [v.label for v in sweep.axes[1].values] == ["oil", "ink"]
    counts = sweep.counts()
    assert counts[CellState.DONE] == 19 and counts[CellState.FAILED] == 10 and len(sweep.cells) == 29
    failed = next(c for c in sweep.cells if c.state == CellState.FAILED)
    assert failed.label == "ILLEGAL_PROMPT" and failed.reason


def test_the_folder_alone_gives_the_same_cells(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    by_manifest = load_sweep(batch.manifest)
    by_folder = load_sweep(batch.folder)
    assert by_folder.batch == "sweep" and not by_folder.from_manifest and by_folder.unplaced == 0
    key = lambda s: sorted((c.job_id, c.coords, c.state, c.file) for c in s.cells)  # noqa: E731
    assert key(by_folder) == key(by_manifest)


def test_recorded_rebuilds_jobs_from_sidecars_and_specs(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    results = list(recorded(batch.folder))
    assert len(results) == len(Ledger.read(batch.folder).records) == 29
    done = [r for r in results if r.sidecar is not None]
    assert len(done) == 19 and all(r.job.axes["subject"] in ("fox", "owl") for r in done)
    assert all(r.read_sidecar(batch.folder) is r.sidecar for r in done)  # read once
    failed = [r for r in results if r.sidecar is None]
    assert {r.job.axes["subject"] for r in failed} == {"forbidden fruit"}  # from the kept spec


def test_new_values_are_pending_and_lost_files_are_said(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    (batch.folder / "images" / "fox" / "oil" / "none.png").unlink()
    batch.manifest.write_text(batch.manifest.read_text().replace("[fox, owl,", "[cat, fox, owl,"))
    sweep = load_sweep(batch.manifest, details=True)
    states = {(sweep.axes[0].values[c.coords[0]].label, c.state) for c in sweep.cells}
    assert ("cat", CellState.PENDING) in states and ("fox", CellState.NO_FILE) in states
    done = next(c for c in sweep.cells if c.state == CellState.DONE)
    assert done.details["task_id"] and done.details["seed"] is not None and done.details["timings"]["polls"] >= 1


def test_replicas_get_an_axis_of_their_own(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path, SWEEP.replace("output_format: png", "output_format: png\nrepeat: 2")
                      .replace('filename: "{subject}/{style}/{loras}"', 'filename: "{subject}/{style}/{loras}-{replica}"'))
    sweep = load_sweep(batch.manifest)
    assert sweep.axes[-1].name == "replica" and [v.label for v in sweep.axes[-1].values] == ["0", "1"]
    assert len(sweep.cells) == 58 and sweep.duplicates == 0


def test_values_read_as_people_write_them() -> None:
    assert [value_label(v) for v in (1.0, 0.25, 3, None, True, {"style": "oil", "light": "soft"})] == \
        ["1", "0.25", "3", "(unset)", "true", "style=oil, light=soft"]


def test_an_unknown_axis_or_value_is_a_clear_error(tmp_path: Path) -> None:
    sweep = load_sweep(run_sweep(tmp_path).manifest)
    with pytest.raises(UsageError, match="did you mean 'loras'"):
        sweep.axis_index("lora")
    with pytest.raises(UsageError, match="its values: none, ghibli@1.5, ghibli@0.25"):
        sweep.axes[2].find("ghibli@2")
    assert sweep.axes[2].find("ghibli@0.5") == 4 and sweep.axes[1].find("oil") == 0
    with pytest.raises(UsageError, match="no batch in"):
        load_sweep(tmp_path)
