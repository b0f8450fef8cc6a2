"""Exports that are whole or absent: written aside and swapped in, resumed by the same command
when cut short, images copied (never hard links to the paid originals unless asked), and every
image checked before it goes in, the job and path of any left out named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batchgen.cli import main
from batchgen.export import ExportFormat, ExportOptions, Omission, export_batch
from batchgen.export.exporter import ExportPhase
from exportkit import load_offline, make_folder, wds_samples


def cut_after(units: int):
    """A progress callback that stands for Ctrl-C once ``units`` units are written."""
    seen = []

    def progress(phase: ExportPhase, done: int, total: int | None) -> None:
        if phase is ExportPhase.WRITE:
            seen.append(done)
            if len(seen) >= units:
                raise KeyboardInterrupt
    return progress


def samples(to: Path) -> int:
    return sum(len(wds_samples(tar)) for tar in sorted(to.glob("train-*.tar")))


def test_a_reexport_cut_short_leaves_the_old_export_whole_and_the_same_command_finishes_it(
        tmp_path: Path) -> None:
    folder, to = tmp_path / "batch", tmp_path / "wds"
    make_folder(folder, 60)
    export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=25))
    before = sorted(p.name for p in to.glob("train-*.tar"))
    assert samples(to) == 60 and len(before) == 3
    with pytest.raises(KeyboardInterrupt):  # --shard-size 10 over 25, cut after 2 of 6 shards
        export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=10),
                     progress=cut_after(2))
    assert sorted(p.name for p in to.glob("train-*.tar")) == before and samples(to) == 60
    ds = load_offline("webdataset", to, tmp_path / "hf")["train"]
    assert ds.num_rows == 60
    again = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=10))
    assert again.resumed == 2 and again.written == 4 and again.exported == 60
    assert len(list(to.glob("train-*.tar"))) == 6 and samples(to) == 60
    assert not list(to.glob(".batchgen-stage-*")) and not list(to.glob(".batchgen-swap-*"))


def test_a_first_imagefolder_export_cut_short_is_finished_by_the_same_command(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchgen.export.imagefolder.FOLDER_SIZE", 10)  # 5 subfolders of 10
    folder, to = tmp_path / "batch", tmp_path / "if"
    make_folder(folder, 50)
    with pytest.raises(KeyboardInterrupt):
        export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, to), progress=cut_after(2))
    assert not (to / "train").exists()  # nothing loadable, rather than images without metadata
    assert main(["export", str(folder), "--format", "imagefolder", "--to", str(to), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "exported 50 image(s)" in out and "2 finished by the export that was cut short" in out
    lines = (to / "train" / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 50
    ds = load_offline("imagefolder", to, tmp_path / "hf")["train"]
    assert ds.num_rows == 50 and "label" not in ds.column_names and "job_id" in ds.column_names


def test_a_swap_cut_short_is_finished_by_the_next_export(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder, to = tmp_path / "batch", tmp_path / "wds"
    make_folder(folder, 30)
    export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=10))
    make_folder(folder, 15, start=30)
    real = os.replace
    calls = []

    def replace(src, dst):  # the process dies after two renames of the swap
        if ".batchgen-stage-" in str(src) and ".batchgen-tmp" not in str(src):
            calls.append(src)
            if len(calls) > 2:
                raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=10))
    monkeypatch.setattr(os, "replace", real)
    assert (to / ".batchgen-swap-train.json").exists()
    again = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=10))
    assert again.finished_swap and again.exported == 45 and samples(to) == 45
    state = json.loads((to / ".batchgen-export-train.json").read_text())
    assert state["rows"] == 45 and not (to / ".batchgen-swap-train.json").exists()


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_an_image_with_flipped_bytes_is_left_out_and_named_by_job_and_path(
        fmt: ExportFormat, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "batch"
    ids = make_folder(folder, 6)
    victim = next(p for p in (folder / "images").rglob(f"{ids[2]}.png"))
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    data[-21] ^= 0xFF  # same size, two bytes flipped
    victim.write_bytes(bytes(data))
    to = tmp_path / "out"
    assert main(["export", str(folder), "--format", fmt.value, "--to", str(to), "--quiet"]) == 0
    out = capsys.readouterr().out
    rel = victim.relative_to(folder).as_posix()
    assert "exported 5 image(s)" in out and "sha256 differs" in out
    assert f"job {ids[2]}: {rel}" in out
    report = export_batch(folder, ExportOptions(fmt, tmp_path / "again"))
    assert [(o.why, o.job_id, o.path) for o in report.omitted] == [(Omission.CHANGED, ids[2], rel)]
    exported = b"".join(p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file())
    assert bytes(data) not in exported


def test_with_no_sha256_recorded_an_image_that_does_not_decode_is_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    ids = make_folder(folder, 3)
    ledger = folder / "ledger.jsonl"
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    for line in lines:
        line.pop("sha256", None)
    ledger.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for path in (folder / "images").rglob("*.json"):  # the sidecars' digests gone too
        side = json.loads(path.read_text())
        side["image"].pop("sha256", None)
        path.write_text(json.dumps(side))
    victim = next((folder / "images").rglob(f"{ids[0]}.png"))
    victim.write_bytes(b"x" * victim.stat().st_size)  # same size, not a PNG
    report = export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "if"))
    assert report.exported == 2 and report.problems == {Omission.UNREADABLE: 1}
    assert report.omitted[0].job_id == ids[0]
