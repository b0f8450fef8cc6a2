"""The run engine end to end against the in-process simulator: run, resume, stop, retry, collect."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from trio.testing import MockClock
from PIL import Image

from faultkit import simulated
from batchgen.cli.exitcodes import exit_code
from vclock import run_virtual
from batchgen.cli.render import render_summary
from batchgen.errors import ManifestError, UsageError
from batchgen.storage.ledger import Ledger
from batchgen.manifest.loader import load_manifest
from batchgen.engine.polling import PollPlanner
from batchgen.engine.runner import Batch, RunOptions, RunSummary
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.status import batch_status

MANIFEST = """\
name: castle
prompt: "a {style} painting of a castle, {mood}"
size: "256*256"
output_format: png
concurrency: 4
filename: "{style}-{seed}"
matrix:
  style: [oil, ink, watercolor]
  mood: [calm]
  seed: [1, 2, 3, 4]
"""
JOBS = 12


def write_manifest(tmp_path: Path, text: str = MANIFEST, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def options(tmp_path: Path, sim: Simulator, **extra) -> RunOptions:
    return RunOptions(output=tmp_path / "out", **simulated(sim),
                      poll=PollPlanner(cold_first=0.01, min_delay=0.005, backoff_start=0.01), **extra)


def run(path: Path, opts: RunOptions, mode: str = "run", clock: MockClock | None = None) -> RunSummary:
    """One run; with ``clock`` (one MockClock for every run of a test) in virtual time."""
    batch = Batch(load_manifest(path), opts)
    if clock is not None:
        return run_virtual(getattr(batch, mode), clock=clock)
    return anyio.run(getattr(batch, mode))


def fast_sim(**config) -> Simulator:
    return Simulator(SimConfig(**{"task_seconds": 0.02, "task_jitter": 0.005, **config}))


def images_of(tmp_path: Path) -> dict[str, Path]:
    return {p.stem: p for p in (tmp_path / "out" / "images").rglob("*.png")}


def test_a_batch_runs_to_completion_with_checked_images_and_full_sidecars(tmp_path: Path) -> None:
    sim = fast_sim()
    summary = run(write_manifest(tmp_path), options(tmp_path, sim))
    assert (exit_code(summary), summary.done, summary.failed, summary.pending) == (0, JOBS, 0, 0)
    images = images_of(tmp_path)
    assert sorted(images) == sorted(f"{s}-{n}" for s in ("oil", "ink", "watercolor") for n in range(1, 5))
    for stem, path in images.items():
        with Image.open(path) as img:
            img.load()
            assert img.size == (256, 256) and img.format == "PNG"
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["request"]["prompt"].startswith(f"a {stem.split('-')[0]} painting")
        assert side["axes"]["style"] == stem.split("-")[0] and side["axes"]["seed"] == int(stem.split("-")[1])
        assert side["seed"] == side["request"]["seed"] and side["task_id"]
        assert side["image"]["bytes"] == path.stat().st_size and len(side["image"]["sha256"]) == 64
        assert (side["image"]["width"], side["image"]["height"], side["image"]["format"]) == (256, 256, "png")
        assert all(side["timings"][k] for k in ("submitted", "finished", "downloaded"))
        assert side["batchgen_version"] and side["provider"]["model"] == "z-image-turbo-lora"
    assert sim.stats.tasks_created == JOBS
    assert not list((tmp_path / "out" / ".tmp").iterdir())


def test_same_command_again_submits_nothing(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    run(path, options(tmp_path, fast_sim()))
    sim = fast_sim()
    summary = run(path, options(tmp_path, sim))
    assert exit_code(summary) == 0 and summary.done == JOBS and summary.submitted == 0
    assert sim.stats.submits == 0 and sim.stats.polls == 0


def test_a_partial_run_is_finished_by_the_next_one_without_paying_twice(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    sim = fast_sim()
    first = run(path, options(tmp_path, sim, max_jobs=5))
    assert (first.done, first.pending, exit_code(first)) == (5, JOBS - 5, 0)
    second = run(path, options(tmp_path, sim))
    assert (second.done, second.submitted) == (JOBS, JOBS - 5)
    assert sim.stats.tasks_created == JOBS


def test_tasks_left_at_the_provider_are_collected_not_resubmitted(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    sim = fast_sim()
    run(path, options(tmp_path, sim))
    # Rewind the ledger as if the run had died right after recording three task ids.
    ledger = Ledger.open(tmp_path / "out", "castle")
    jobs = list(load_manifest(path).jobs())[:3]
    for job in jobs:
        task_id = ledger.get(job.job_id).task_id
        ledger.submitting(job)
        ledger.submitted(job.job_id, task_id)
        (tmp_path / "out" / "images" / f"{job.name}.png").unlink()
    ledger.close()
    created = sim.stats.tasks_created
    summary = run(path, options(tmp_path, sim))
    assert summary.done == JOBS and summary.submitted == 0 and summary.collected == 3
    assert sim.stats.tasks_created == created


def test_a_deleted_image_is_fetched_again_and_a_lone_sidecar_does_not_count(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    sim = fast_sim()
    run(path, options(tmp_path, sim))
    images = images_of(tmp_path)
    images["oil-1"].unlink()                           # image gone, sidecar left
    images["ink-2"].with_suffix(".json").unlink()      # sidecar gone, image left
    summary = run(path, options(tmp_path, sim))
    assert summary.redownloaded == 2 and summary.done == JOBS and summary.submitted == 0
    assert images["oil-1"].exists() and images["ink-2"].with_suffix(".json").exists()
    assert sim.stats.tasks_created == JOBS


def test_an_edited_manifest_runs_new_jobs_and_reports_vanished_ones(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    sim = fast_sim()
    run(path, options(tmp_path, sim))
    write_manifest(tmp_path, MANIFEST.replace("[oil, ink, watercolor]", "[oil, ink, pastel]"))
    summary = run(path, options(tmp_path, sim))
    assert summary.submitted == 4 and summary.vanished == 4 and summary.done == JOBS
    assert "no longer in the manifest" in render_summary(summary, path)
    assert "watercolor-1" in images_of(tmp_path)  # files of vanished jobs are kept


def test_balance_runs_out_then_top_up_finishes(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    sim = fast_sim(balance=5)
    first = run(path, options(tmp_path, sim))
    assert exit_code(first) == 3 and first.stop_kind == "balance"
    assert first.done == 5 and first.pending == JOBS - 5  # every paid task was collected
    assert sim.stats.submits == 6  # the refused one; submits waiting their turn were withdrawn
    assert "Top up" in render_summary(first, path)
    sim.state.balance = 100
    second = run(path, options(tmp_path, sim))
    assert exit_code(second) == 0 and second.done == JOBS
    assert sim.stats.tasks_created == JOBS


def test_a_refused_key_stops_with_exit_3_and_creates_nothing(tmp_path: Path) -> None:
    sim = fast_sim(api_key="only-this-key-123456")
    summary = run(write_manifest(tmp_path), options(tmp_path, sim))
    assert exit_code(summary) == 3 and summary.stop_kind == "auth"
    assert sim.stats.tasks_created == 0 and summary.pending == JOBS
    assert sim.stats.api_requests == 1  # one refusal is enough: nothing else was sent
    assert "JIEKOU_API_KEY" in summary.stopped


def test_failed_tasks_are_grouped_and_retry_finishes_them(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    sim = fast_sim(fault_task_failed=0.4, fault_seed=4)
    first = run(path, options(tmp_path, sim))
    assert exit_code(first) == 1 and first.failed > 0 and first.failures["TASK_FAILED"] == first.failed
    assert "batchgen retry" in render_summary(first, path)
    report = batch_status(tmp_path / "out")
    assert report.counts["failed"] == first.failed and report.failures[0]["reason"] == "TASK_FAILED"
    sim.state.config.fault_task_failed = 0.0
    second = run(path, options(tmp_path, sim), mode="retry")
    assert exit_code(second) == 0 and second.done == JOBS and second.submitted == first.failed


def test_rejected_requests_are_not_retried_unless_asked(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, MANIFEST.replace("[calm]", "[forbidden]"))
    sim = fast_sim()
    first = run(path, options(tmp_path, sim))
    assert first.failed == JOBS and first.failures["ILLEGAL_PROMPT"] == JOBS and first.retryable_failed == 0
    again = run(path, options(tmp_path, sim), mode="retry")
    assert again.submitted == 0
    assert sim.stats.submits == JOBS
    forced = run(path, options(tmp_path, sim, include_rejected=True), mode="retry")
    assert sim.stats.submits == 2 * JOBS and forced.failed == JOBS


@pytest.mark.slow
def test_a_task_that_never_ends_times_out_and_collect_picks_it_up_later(tmp_path: Path) -> None:
    # The default task_timeout of 30 minutes, twice over, in virtual time.
    path = write_manifest(tmp_path)
    clock = MockClock(autojump_threshold=0)
    sim = Simulator(SimConfig(task_seconds=20, task_jitter=5, fault_stuck=0.3, fault_seed=1),
                    clock=anyio.current_time)
    first = run(path, options(tmp_path, sim), clock=clock)
    stuck = first.failures["TIMEOUT"]
    assert stuck > 0 and first.done == JOBS - stuck
    assert first.elapsed >= 1800  # each stuck task was followed for the whole task_timeout
    sim.state.config.fault_stuck = 0.0
    later = run(path, options(tmp_path, sim), mode="collect", clock=clock)
    assert later.submitted == 0  # collect never submits
    assert later.failures["TIMEOUT"] == stuck  # still stuck: bounded wait again, nothing lost


def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    holder = Ledger.open(tmp_path / "out", "castle")
    try:
        with pytest.raises(UsageError, match="already running"):
            run(path, options(tmp_path, fast_sim()))
    finally:
        holder.close()


def test_a_folder_of_another_batch_is_refused(tmp_path: Path) -> None:
    path = write_manifest(tmp_path)
    run(path, options(tmp_path, fast_sim()))
    other = write_manifest(tmp_path, MANIFEST.replace("name: castle", "name: other"), "o.yaml")
    with pytest.raises(Exception, match="belongs to batch 'castle'") as info:
        run(other, options(tmp_path, fast_sim()))
    assert info.value.exit_code == 2


def test_nothing_is_sent_for_an_invalid_manifest(tmp_path: Path) -> None:
    sim = fast_sim()
    path = write_manifest(tmp_path, MANIFEST.replace('"256*256"', '"256*5000"'))
    with pytest.raises(ManifestError):
        Batch(path, options(tmp_path, sim))
    assert sim.stats.api_requests == 0 and not (tmp_path / "out").exists()
