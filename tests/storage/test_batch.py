"""One way to open a batch (``storage/batch.py``): every command finds the same batch from a
manifest, its folder or any working directory, and they agree on every figure.

Runs go through the CLI against the in-process simulator (``--simulate``), as a person would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.cli import main
from batchgen.storage.batch import JobCounts, open_batch, place_of
from faultkit import manifest_text

FAST = ["--simulate", "--quiet", "--sim-task-seconds", "0"]


def project(tmp_path: Path, jobs: int = 6, name: str = "b") -> Path:
    """A manifest in a project folder of its own, with the default output."""
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    path = folder / "m.yaml"
    path.write_text(manifest_text(name, jobs))
    return path


def status_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["status", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_same_manifest_finds_the_same_batch_from_any_directory(tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    manifest = project(tmp_path)
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    monkeypatch.chdir(here)
    assert main(["run", str(manifest), *FAST]) == 0
    batch = manifest.parent / "output" / "b"
    assert (batch / "ledger.jsonl").is_file() and not (here / "output").exists()
    monkeypatch.chdir(there)
    assert main(["run", "../project/m.yaml", *FAST]) == 0  # nothing paid again
    assert not (there / "output").exists()
    data = status_json(capsys, "../project/m.yaml")
    assert (data["folder"], data["done"], data["tasks_created"]) == (str(batch), 6, 6)


def test_a_run_that_would_start_a_second_batch_is_refused_before_paying(tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    manifest = project(tmp_path)
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "output" / "b"  # where the default output was, relative to the directory
    assert main(["run", str(manifest), "--output", str(old), *FAST]) == 0
    capsys.readouterr()
    assert main(["run", str(manifest), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"this manifest's batch is in {old}" in err and "Nothing was sent" in err
    assert not (manifest.parent / "output").exists()
    for command in ("status", "grid"):  # no command reads the empty place as the batch
        assert main([command, str(manifest), *(["--to", "g.png"] if command == "grid" else [])]) == 2
        assert f"this manifest's batch is in {old}" in capsys.readouterr().err
    hint = err.split("Go on with the batch where it is: ")[1].split(";")[0]
    monkeypatch.chdir(manifest.parent)  # the hint works from anywhere
    assert main(hint.split()[1:] + FAST) == 0
    assert status_json(capsys, str(old))["tasks_created"] == 6


def test_plan_with_output_shows_that_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    manifest = project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(manifest), "--output", "elsewhere"]) == 0
    assert f"output      {tmp_path / 'elsewhere'}" in capsys.readouterr().out
    assert main(["plan", str(manifest), "--output", "elsewhere", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(tmp_path / "elsewhere")


def test_status_does_not_call_a_batch_with_missing_images_complete(tmp_path: Path, capsys) -> None:
    manifest = project(tmp_path, jobs=8)
    assert main(["run", str(manifest), *FAST]) == 0
    batch = manifest.parent / "output" / "b"
    images = sorted((batch / "images").rglob("*.png"))
    for image in images[:3]:
        image.unlink()
    for target in (str(manifest), str(batch)):
        data = status_json(capsys, target)
        assert (data["done"], data["missing"], data["complete"]) == (8, 3, False), target
        assert main(["status", target]) == 0
        text = capsys.readouterr().out
        assert "not complete: 8/8 done" in text and "3 done job(s) have no image file" in text
        assert f"batchgen run {manifest} --output {batch}" in text  # the repair, pasteable
    assert main(["run", str(manifest), *FAST]) == 0  # fetched again from their tasks
    assert status_json(capsys, str(batch))["complete"] is True


def test_export_of_the_folder_after_an_edit_exports_what_the_manifest_does(tmp_path: Path,
                                                                           capsys) -> None:
    pytest.importorskip("pyarrow")
    manifest = project(tmp_path, jobs=10)
    assert main(["run", str(manifest), *FAST]) == 0
    manifest.write_text(manifest_text("b", 4))  # an edit: 6 jobs leave the manifest
    assert main(["run", str(manifest), *FAST]) == 0
    batch = manifest.parent / "output" / "b"
    rows = {}
    for target in (str(manifest), str(batch)):
        to = tmp_path / f"export-{len(rows)}"
        assert main(["export", target, "--format", "imagefolder", "--to", str(to), "--quiet"]) == 0
        rows[target] = sum(1 for _ in (to / "train").rglob("*.png"))
    assert rows == {str(manifest): 4, str(batch): 4}
    for target in (str(manifest), str(batch)):
        data = status_json(capsys, target)
        assert (data["planned"], data["done"], data["vanished"]) == (4, 4, 6), target


def test_grid_of_a_manifest_run_from_another_directory_draws_its_images(tmp_path: Path, capsys,
                                                                         monkeypatch) -> None:
    pytest.importorskip("PIL")
    manifest = project(tmp_path, jobs=4)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["run", str(manifest), *FAST]) == 0
    monkeypatch.chdir(tmp_path / "b")
    from batchgen.view.sweep import CellState, load_sweep

    sweep = load_sweep("../project/m.yaml")
    assert sweep.counts()[CellState.DONE] == 4 and sweep.counts()[CellState.PENDING] == 0
    assert main(["grid", "../project/m.yaml", "--to", "g.png"]) == 0
    assert list(Path().glob("g*.png"))


def test_every_command_agrees_on_the_figures(tmp_path: Path) -> None:
    manifest = project(tmp_path, jobs=12)
    assert main(["run", str(manifest), *FAST, "--max-jobs", "5"]) == 0
    batch = manifest.parent / "output" / "b"
    expected = JobCounts(planned=12, done=5, pending=7, files_checked=True)
    for target in (manifest, batch, str(batch)):
        opened = open_batch(target)
        assert opened.counts() == expected, target
        report = opened.status()
        assert (report.planned, report.done, report.pending, report.complete) == (12, 5, 7, False)
        assert sum(opened.results().counts().values()) == 12
        assert opened.location == str(batch)


def test_where_a_batch_lives_is_decided_once(tmp_path: Path, monkeypatch) -> None:
    from batchgen.errors import UsageError

    manifest = project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert place_of(manifest).folder == manifest.parent / "output" / "b"
    assert place_of(str(manifest), output="x").folder == tmp_path / "x"
    store = place_of(manifest, output="s3://bucket/run/", state="st")
    assert (store.url, store.folder, store.location) == ("s3://bucket/run", tmp_path / "st",
                                                         "s3://bucket/run")
    assert place_of("s3://bucket/run").url == "s3://bucket/run"  # never s3:/bucket/run
    with pytest.raises(UsageError, match="--output goes with a manifest"):
        place_of("s3://bucket/run", output="x")
    with pytest.raises(UsageError, match="neither a manifest file"):
        place_of(tmp_path / "nothing.yaml")
    with pytest.raises(UsageError, match="--state is for an object store"):
        place_of(manifest, state="st")
