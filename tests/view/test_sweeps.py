"""Sweeps as a person writes them: LoRA scales as axes, values in the order written, Z as
sub-grids in one image, sheets only where jobs are, a default Y that gives way, progress."""

from __future__ import annotations

import io
import re
from pathlib import Path

import anyio
from PIL import Image
from trio.testing import MockClock

from batchgen.cli.main import main
from batchgen.cli.progress import ExportProgressView, ProgressMode
from batchgen.cli.render import render_grid_progress
from batchgen.engine.runner import Batch
from batchgen.manifest import load_manifest
from batchgen.simulator import SimConfig, Simulator
from batchgen.view.grid import GridOptions, make_grid
from batchgen.view.sweep import CellState, load_sweep
from faultkit import fast_options, simulated, write_manifest
from vclock import run_virtual
from viewkit import LORAS, run_sweep

BUNDLED = Path(__file__).resolve().parents[2] / "manifests" / "two-lora-sweep.yaml"


def run_bundled(tmp_path: Path) -> Path:
    text = re.sub(r"(?m)^output: .*$", f"output: {tmp_path / 'out'}", BUNDLED.read_text())
    text = text.replace('size: "512*512"', 'size: "256*256"')
    manifest = write_manifest(tmp_path, text)
    sim = Simulator(SimConfig(task_seconds=2, task_jitter=0.5), clock=anyio.current_time)
    batch = Batch(load_manifest(manifest), fast_options(tmp_path / "out", **simulated(sim)))
    run_virtual(batch.run, clock=MockClock(autojump_threshold=0))
    return manifest


def test_two_lora_scales_are_the_two_axes_of_one_grid_with_seeds_side_by_side(tmp_path: Path) -> None:
    manifest = run_bundled(tmp_path)
    result = make_grid(manifest, tmp_path / "g.png",
                       GridOptions(x="style_scale", y="detail_scale", z="seed", cell_size=96))
    (sheet,) = result.sheets
    assert sheet.columns == ["0", "0.5", "1"] and sheet.rows == ["0", "0.5", "1"]
    assert len(sheet.cells) == 18 and all(c.state == CellState.DONE for c in sheet.cells)
    words = [line for t in sheet.texts for line in t.lines]
    assert "seed: 42" in words and "seed: 7" in words  # a labelled sub-grid per seed
    sweep = result.sweep
    xi, yi, zi = (sweep.axis_index(n) for n in ("style_scale", "detail_scale", "seed"))
    # Each box holds the job of its block's seed, its column's style and its row's detail scale,
    # and the job sent those scales.
    requests = {job.job_id: job.request for job in load_manifest(manifest).jobs()}
    for n, box in enumerate(sheet.cells):
        block, (row, column) = n // 9, divmod(n % 9, 3)
        assert box.cell is not None and box.cell.coords[zi] == block
        assert (box.cell.coords[xi], box.cell.coords[yi]) == (column, row)
        sent = [item["scale"] for item in requests[box.cell.job_id]["loras"]]
        assert sent == [sweep.axes[xi].values[column].raw, sweep.axes[yi].values[row].raw]
    first, second = sheet.cells[0].box, sheet.cells[9].box
    assert second[0] > first[0] + 3 * (first[2] - first[0]) and second[1] == first[1]  # side by side
    with Image.open(sheet.file) as img:
        assert img.size == (sheet.width, sheet.height) and max(img.size) <= 8192


def test_z_keeps_within_the_size_cap(tmp_path: Path) -> None:
    manifest = run_bundled(tmp_path)
    result = make_grid(manifest, tmp_path / "g.png",
                       GridOptions(x="style_scale", y="detail_scale", z="seed", max_size=1024,
                                   cell_size=512))
    (sheet,) = result.sheets
    assert sheet.width <= 1024 and sheet.height <= 1024 and sheet.cell[0] < 512
    assert sum(1 for t in sheet.texts if t.lines[0].startswith("seed: ")) == 2


def test_a_z_axis_is_not_also_x(tmp_path: Path) -> None:
    import pytest

    from batchgen.errors import UsageError

    manifest = run_bundled(tmp_path)
    with pytest.raises(UsageError, match="already on X or Y"):
        make_grid(manifest, tmp_path / "g.png", GridOptions(x="seed", z="seed"))


def test_the_folder_keeps_the_order_written_too(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    sweep = load_sweep(batch.folder)
    assert [v.label for v in sweep.axes[sweep.axis_index("loras")].values] == LORAS
    assert [v.label for v in sweep.axes[sweep.axis_index("subject")].values] == ["fox", "owl", "forbidden fruit"]


def test_rows_of_a_file_keep_file_order(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("subject,seed\nfox,3\nlighthouse,1\nramen,2\nknight,4\n")
    manifest = write_manifest(tmp_path, f"""\
name: rows
output: {tmp_path / 'out'}
prompt: "a {{subject}}"
matrix:
  row: {{file: rows.csv}}
  style: [oil, ink]
""")
    sweep = load_sweep(manifest)
    assert [v.raw["subject"] for v in sweep.axes[0].values] == ["fox", "lighthouse", "ramen", "knight"]


def test_include_cells_make_no_empty_sheets(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, f"""\
name: i2i
output: {tmp_path / 'out'}
prompt: "the village in {{season}}"
image_url: "https://example.com/v.png"
matrix:
  season: [winter, autumn]
  strength: {{from: 0.3, to: 0.9, step: 0.3}}
include:
  - prompt: "the village under a starry sky"
    mask: "https://example.com/mask.png"
    strength: 0.85
""")
    result = make_grid(manifest, tmp_path / "g.png", GridOptions(cell_size=96))
    (sheet,) = result.sheets  # not 12 sheets of 2 x 2 (mask x prompt) for 7 jobs
    assert sheet.columns == ["0.3", "0.6", "0.9", "0.85"] and sheet.rows == ["winter", "autumn", "(unset)"]
    assert sum(1 for c in sheet.cells if c.state == CellState.PENDING) == 7


def test_pages_without_a_job_are_left_out(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, f"""\
name: sparse
output: {tmp_path / 'out'}
prompt: "a {{subject}} {{style}}"
matrix:
  subject: [fox, owl]
  style: [oil, ink]
  seed: [1, 2, 3]
exclude:
  - {{subject: owl, style: ink}}
""")
    result = make_grid(manifest, tmp_path / "g.png", GridOptions(x="seed", y="subject", pages=["style"],
                                                                  where=[("subject", "owl")]))
    assert [s.page for s in result.sheets] == [[("style", "oil")]]


def test_a_default_y_gives_way_to_an_axis_put_on_the_pages(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(x="loras", pages=["style"], cell_size=96))
    c, axes = result.choice, result.sweep.axes
    assert axes[c.x].name == "loras" and axes[c.y].name == "subject" and [axes[i].name for i in c.pages] == ["style"]
    assert len(result.sheets) == 2


def test_progress_counts_every_cell(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    heard: list[tuple[int, int]] = []
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=96),
                       progress=lambda done, total: heard.append((done, total)))
    total = sum(len(s.cells) for s in result.sheets)
    assert heard[0] == (0, total) and heard[-1] == (total, total)
    assert [d for d, _ in heard] == list(range(total + 1))


def test_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with ExportProgressView(ProgressMode.AUTO, out, interval=0, render=render_grid_progress) as view:
        view.update("drawing", 50, 200)
    assert out.getvalue() == "batchgen grid: drawing: 50/200 cells (25%)\n"


def test_the_cli_draws_z_and_stays_quiet_when_asked(tmp_path: Path, capsys) -> None:
    manifest = run_bundled(tmp_path)
    code = main(["grid", str(manifest), "--to", str(tmp_path / "g.png"), "--x", "style_scale",
                 "--y", "detail_scale", "--z", "seed", "--cell-size", "96", "--quiet"])
    out = capsys.readouterr()
    assert code == 0 and "Z seed (2) side by side" in out.out and out.err == ""


U2 = """\
name: u2
output: {out}
prompt: "a {{subject}}"
matrix:
  subject: [fox, lighthouse, ramen, knight]
  seed: {{random: 4, base: 7}}
"""


def test_labels_fit_small_cells_whole(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, U2.format(out=tmp_path / "out"))
    result = make_grid(manifest, tmp_path / "g.png", GridOptions(x="seed", y="subject", cell_size=64))
    (sheet,) = result.sheets
    assert all(len(label) >= 9 for label in sheet.columns)  # ten-digit seeds
    lines = {line for t in sheet.texts for line in t.lines}
    assert set(sheet.columns) <= lines  # each seed on one line, not cut mid-number
    for box in sheet.cells:
        assert box.text is not None and box.text.lines == ["pending", "not run yet"]
        x0, y0, x1, y1 = box.box
        tx0, ty0, tx1, ty1 = box.text.box
        assert x0 <= tx0 and tx1 <= x1 and y0 <= ty0 and ty1 <= y1  # the words fit inside


def test_a_default_y_gives_way_on_the_command_line(tmp_path: Path, capsys) -> None:
    manifest = write_manifest(tmp_path, U2.format(out=tmp_path / "out"))
    code = main(["grid", str(manifest), "--to", str(tmp_path / "g.png"), "--x", "seed", "--page", "subject",
                 "--cell-size", "64", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "X seed (4), Y none, pages subject (4)" in out
    assert len(list(tmp_path.glob("g-subject_*.png"))) == 4


def test_plan_names_the_include_cells(tmp_path: Path, capsys) -> None:
    manifest = write_manifest(tmp_path, """\
name: i2i
prompt: "the village in {season}"
image_url: "https://example.com/v.png"
matrix:
  season: [winter, autumn]
  strength: {from: 0.3, to: 0.9, step: 0.3}
exclude:
  - {season: autumn, strength: 0.9}
include:
  - prompt: "the village under a starry sky"
    strength: 0.85
""")
    assert main(["plan", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "axes        season 2 x strength 3, + 1 include cell(s)" in out
    assert "jobs        6 (5 from the matrix (1 excluded) + 1 from include)" in out


def test_sidecars_and_export_know_a_scale_axis_by_name(tmp_path: Path, capsys) -> None:
    import json

    manifest = run_bundled(tmp_path)
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "out" / "images").rglob("*.json")]
    assert len(sidecars) == 18
    for sidecar in sidecars:
        scales = [item["scale"] for item in sidecar["request"]["loras"]]
        assert scales == [sidecar["axes"]["style_scale"], sidecar["axes"]["detail_scale"]]
    code = main(["export", str(manifest), "--format", "imagefolder", "--where", "style_scale=0.5",
                 "--to", str(tmp_path / "ds")])
    out = capsys.readouterr().out
    assert code == 0 and "exported 6 image(s)" in out


def test_z_that_cannot_fit_one_image_becomes_one_file_per_value(tmp_path: Path) -> None:
    manifest = run_bundled(tmp_path)
    result = make_grid(manifest, tmp_path / "g.png",
                       GridOptions(x="style_scale", y="detail_scale", z="seed", max_size=2048,
                                   cell_size=512, min_cell=512))
    assert [s.page for s in result.sheets] == [[("seed", "42")], [("seed", "7")]]
    assert all(len(s.cells) == 9 and s.width <= 2048 and s.part == (1, 1) for s in result.sheets)
    words = {line for s in result.sheets for t in s.texts for line in t.lines}
    assert "one grid per seed" not in words
