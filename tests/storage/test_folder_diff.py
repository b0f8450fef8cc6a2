"""An edited manifest against its batch folder: no job writes over another's file, renamed files
are reported, and ``plan`` says what is done, new and gone, and what the new work costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen import errors
from batchgen.cli.main import main
from batchgen.cli.render import render_summary
from batchgen.job import JobState
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest
from batchgen.storage.ledger import Ledger
from storagekit import fast_sim, options, run, seeds_manifest


def side(out: Path, name: str) -> dict:
    return json.loads((out / "images" / f"{name}.json").read_text())


def test_an_edit_that_shifts_index_names_is_refused_before_anything_is_sent(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    run(seeds_manifest(tmp_path, [1, 2, 3]), options(out, sim))
    paid = {name: (out / "images" / f"{name}.png").read_bytes() for name in ("000", "001", "002")}
    path = seeds_manifest(tmp_path, [1, 5, 2, 3])  # seed 5 would take 001, seed 2's file
    submits = sim.stats.submits
    with pytest.raises(errors.FileClash) as info:
        run(path, options(out, sim))
    err = info.value
    # Seed 5 is new and would write 001; seeds 2 and 3 are done and keep 001 and 002.
    assert err.exit_code == 2 and err.count == 1
    first = err.clashes[0]
    owner = side(out, "001")["job_id"]
    assert (first.file, first.index, first.owner, first.owner_state) == ("images/001.png", 1, owner, JobState.DONE)
    assert first.job_id in str(err) and owner in str(err) and "images/001.png" in str(err)
    assert sim.stats.submits == submits  # nothing was sent
    assert {n: (out / "images" / f"{n}.png").read_bytes() for n in paid} == paid  # nothing lost
    # plan refuses it the same way, naming both jobs and the file, with exit 2.
    assert main(["plan", str(path), "--output", str(out)]) == 2
    text = capsys.readouterr().err
    assert "images/001.png" in text and first.job_id in text and owner in text
    assert f"--output {out}-2" in text


def test_a_filename_edit_keeps_done_files_where_they_are_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    run(seeds_manifest(tmp_path, [1, 2, 3]), options(out, sim))
    path = seeds_manifest(tmp_path, [1, 2, 3], **{'"{index:03d}"': '"seed-{seed}"'})
    summary = run(path, options(out, sim))
    assert (summary.done, summary.submitted, summary.renamed) == (3, 0, 3)
    assert summary.renamed_example == ("images/000.png", "images/seed-1.png")
    assert "keep their files under the names an earlier filename gave them" in render_summary(summary, path)
    assert sorted(p.name for p in (out / "images").glob("*.png")) == ["000.png", "001.png", "002.png"]
    # A repaired file goes back under the name the ledger has, never onto a new one.
    (out / "images" / "001.png").unlink()
    again = run(path, options(out, sim))
    assert again.redownloaded == 1 and (out / "images" / "001.png").is_file()
    assert not (out / "images" / "seed-2.png").exists()


def test_plan_with_a_ledger_shows_done_new_and_vanished_jobs_and_the_cost_of_the_new_work(
        tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    priced = {'concurrency: 4': 'concurrency: 4\nprice_per_image: 0.01', '"{index:03d}"': '"s{seed}"'}
    path = seeds_manifest(tmp_path, list(range(1, 25)), **priced)
    run(path, options(out, sim, max_jobs=10))
    assert main(["plan", str(path), "--output", str(out), "--json", "--task-seconds", "4"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ledger"], data["jobs"], data["done"], data["new"], data["vanished"]) == (True, 24, 10, 14, 0)
    assert data["new_estimate_seconds"] == 14 * 4 / 4 and data["new_cost"] == pytest.approx(0.14)
    # An edit of output_format makes every job new: plan says so before anything is paid.
    edited = seeds_manifest(tmp_path, list(range(1, 25)),
                            **{**priced, "output_format: png": "output_format: webp"})
    assert main(["plan", str(edited), "--output", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["done"], data["new"], data["vanished"]) == (0, 24, 10)
    assert all(type(data[k]) is int for k in ("done", "new", "vanished"))
    assert main(["plan", str(edited), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "in folder   0 done, 24 new" in text and "10 no longer in the manifest" in text
    assert "24 new jobs x 3 s / 4 in flight" in text and "cost        ~0.24 for 24 new jobs" in text


def test_plan_without_a_ledger_counts_every_job_as_new(tmp_path: Path, capsys) -> None:
    path = seeds_manifest(tmp_path, [1, 2, 3])
    assert main(["plan", str(path), "--output", str(tmp_path / "none"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ledger"], data["new"], data["done"], data["vanished"]) == (False, 3, 0, 0)


def test_plan_says_when_the_folder_was_made_against_another_target(tmp_path: Path, capsys) -> None:
    path = seeds_manifest(tmp_path, [1, 2])
    out = tmp_path / "out"
    run(path, options(out, fast_sim()))
    assert main(["plan", str(path), "--output", str(out)]) == 0
    assert "run refuses it without --adopt" in capsys.readouterr().out
    assert main(["plan", str(path), "--output", str(out), "--simulate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target_matches"] is True


def test_the_diff_keeps_memory_flat_and_finds_a_clash_among_many_jobs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(seeds_manifest(tmp_path, [1, 2, 3]), options(out, fast_sim()))
    from batchgen.storage.diff import FolderDiff

    # 3,000 new jobs named by index over a folder of 3: only the first three names clash.
    path = seeds_manifest(tmp_path, list(range(100, 3100)))
    diff = FolderDiff(Ledger.read(out))
    plan_manifest(load_manifest(path), observe=diff.add)
    diff.finish()
    assert (diff.new, diff.vanished, diff.clash_count) == (3000, 3, 3)
    assert [c.file for c in diff.clashes] == ["images/000.png", "images/001.png", "images/002.png"]
    assert all(not c.owner_in_manifest for c in diff.clashes)
