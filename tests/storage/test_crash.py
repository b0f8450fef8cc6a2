"""Crash consistency beyond SIGKILL: damaged ledgers, files changed by hand, two runs at once.

Each test damages a finished (or half-finished) batch folder the way a crash, a user or a
second process would, runs again, and holds the folder to ``faultkit.check_folder``. What
matters besides "it finishes": nothing is silently skipped, and no task is paid for twice
unless the damage destroyed its id (and then the run says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.cli.exitcodes import exit_code
from batchgen.cli.render import render_status, render_summary
from batchgen.storage.ledger import LEDGER_FILE, Ledger
from batchgen.simulator import SimConfig, Simulator, running_simulator
from batchgen.storage.status import batch_status
from faultkit import PausedClock, simulated, check_folder, cli, cli_here, fast_options, manifest_text, run_batch, wait_running, write_manifest

JOBS = 12
KEY = "sk-crash-0123456789abcdef"


def fast_sim(**config) -> Simulator:
    return Simulator(SimConfig(**{"task_seconds": 0.02, "task_jitter": 0.005, **config}))


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Path, Simulator]:
    """A finished 12-job batch in tmp_path/out and the simulator that holds its tasks."""
    path = write_manifest(tmp_path, manifest_text("crash", JOBS, concurrency=4))
    sim = fast_sim()
    summary = run_batch(path, fast_options(tmp_path / "out", **simulated(sim)))
    assert summary.done == JOBS and sim.stats.tasks_created == JOBS
    return path, sim


def ledger_lines(folder: Path) -> list[str]:
    return (folder / LEDGER_FILE).read_text().splitlines(keepends=True)


def test_a_torn_last_line_loses_only_that_event_and_the_next_run_repairs_it(
        tmp_path: Path, finished) -> None:
    path, sim = finished
    out = tmp_path / "out"
    lines = ledger_lines(out)
    last = json.loads(lines[-1])
    assert last["state"] == "done"
    (out / LEDGER_FILE).write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert Ledger.read(out).get(last["job"]).state == "generated"  # the torn event is ignored
    assert batch_status(out).unreadable_lines == 1

    summary = run_batch(path, fast_options(out, **simulated(sim)))
    # The job's task is followed again and its image fetched; nothing is submitted.
    assert (summary.done, summary.submitted, summary.collected) == (JOBS, 0, 1)
    assert sim.stats.tasks_created == JOBS
    report = check_folder(out)
    assert report.ledger.stats.bad_lines == 0  # compacted: the torn line is gone
    assert report.states == {"done": JOBS}


def test_garbage_lines_in_the_middle_are_skipped_counted_and_compacted_away(
        tmp_path: Path, finished) -> None:
    path, sim = finished
    out = tmp_path / "out"
    lines = ledger_lines(out)
    middle = len(lines) // 2
    garbage = ["\x00\x00\x00\x00\n", "{\"job\": \"abc\", \"state\": \"exploded\"}\n", "[1, 2, 3]\n",
               "not json at all }\n", '{"job": 17, "state": "done"}\n', "\n"]
    (out / LEDGER_FILE).write_text("".join(lines[:middle] + garbage + lines[middle:]))
    report = batch_status(out)
    assert report.unreadable_lines >= 4 and report.counts["done"] == JOBS
    assert "unreadable ledger line(s) were skipped" in render_status(report)

    summary = run_batch(path, fast_options(out, **simulated(sim)))
    assert (summary.done, summary.submitted, exit_code(summary)) == (JOBS, 0, 0)
    assert sim.stats.tasks_created == JOBS and sim.stats.submits == JOBS
    assert check_folder(out).ledger.stats.bad_lines == 0


def test_a_torn_submitted_line_is_reported_as_possibly_paid_and_resubmitted(tmp_path: Path) -> None:
    """The one case where damage costs a task: the id itself was torn. The run says so."""
    path = write_manifest(tmp_path, manifest_text("crash", JOBS, concurrency=4))
    out = tmp_path / "out"
    sim = fast_sim()
    run_batch(path, fast_options(out, **simulated(sim), max_jobs=1))
    lines = ledger_lines(out)
    # Keep the header and the submitting line, tear the submitted line (a kill mid-append).
    kept = [line for line in lines if '"state":"done"' not in line and '"state":"generated"' not in line]
    submitted = next(i for i, line in enumerate(kept) if '"state":"submitted"' in line)
    (out / LEDGER_FILE).write_text("".join(kept[:submitted]) + kept[submitted][:40])
    summary = run_batch(path, fast_options(out, **simulated(sim)))
    assert summary.done == JOBS and summary.possibly_created == 1
    assert "a task may exist at the provider without its id" in render_summary(summary, path)
    assert sim.stats.tasks_created == JOBS + 1  # the torn id's task, paid for but unknown
    check_folder(out)


def test_a_ledger_of_another_batch_is_refused_by_the_cli_and_left_untouched(
        tmp_path: Path, finished) -> None:
    _, _ = finished
    out = tmp_path / "out"
    before = (out / LEDGER_FILE).read_bytes()
    other = write_manifest(tmp_path, manifest_text("other", 3), "other.yaml")
    result = cli_here("run", str(other), "--simulate", "--output", str(out), "--quiet")
    assert result.returncode == 2, result.stderr
    assert "belongs to batch 'crash', not 'other'" in result.stderr
    assert "--output" in result.stderr and "Traceback" not in result.stderr
    assert (out / LEDGER_FILE).read_bytes() == before
    check_folder(out)


def test_an_image_deleted_or_cut_by_hand_is_fetched_again_not_skipped(tmp_path: Path, finished) -> None:
    path, sim = finished
    out = tmp_path / "out"
    (out / "images" / "img-1.png").unlink()
    cut = out / "images" / "img-2.png"
    cut.write_bytes(cut.read_bytes()[:100])              # a half-copied file
    (out / "images" / "img-3.json").unlink()              # an image without its sidecar
    summary = run_batch(path, fast_options(out, **simulated(sim)))
    assert (summary.redownloaded, summary.collected, summary.submitted) == (3, 3, 0)
    assert sim.stats.tasks_created == JOBS
    assert check_folder(out).states == {"done": JOBS}


def test_an_image_whose_task_the_provider_forgot_is_redone_by_run_itself(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_text("crash", JOBS, concurrency=4))
    out = tmp_path / "out"
    clock = [0.0]
    sim = Simulator(SimConfig(task_seconds=0, result_ttl=60), clock=lambda: clock[0])
    run_batch(path, fast_options(out, **simulated(sim)))
    (out / "images" / "img-5.png").unlink()
    clock[0] += 3600  # the provider has forgotten every task
    again = run_batch(path, fast_options(out, **simulated(sim)))
    # Not a failure left for retry: the same run submits the job anew, as documented.
    assert (exit_code(again), again.done, again.failed) == (0, JOBS, 0)
    assert (again.redone, again.redownloaded, again.submitted) == (1, 0, 1)
    text = render_summary(again, path)
    assert "no longer knew were submitted again" in text and "fetched again" not in text
    assert sim.stats.tasks_created == JOBS + 1
    check_folder(out)


def test_a_lone_sidecar_and_a_lone_image_do_not_count_as_done(tmp_path: Path, finished) -> None:
    path, sim = finished
    out = tmp_path / "out"
    (out / "images" / "img-7.png").unlink()            # sidecar left alone
    (out / "images" / "img-8.json").unlink()           # image left alone
    report = batch_status(out)  # status trusts the ledger; the run checks the files
    assert report.counts["done"] == JOBS
    summary = run_batch(path, fast_options(out, **simulated(sim)))
    assert summary.redownloaded == 2 and summary.done == JOBS and sim.stats.tasks_created == JOBS
    check_folder(out)


def test_leftovers_of_a_crash_in_tmp_and_a_cut_compaction_are_cleaned(tmp_path: Path, finished) -> None:
    path, sim = finished
    out = tmp_path / "out"
    (out / ".tmp" / "3f2a9c").write_bytes(b"\x89PNG half an image")
    (out / ".tmp" / "nested").mkdir()
    (out / ".tmp" / "nested" / "x").write_bytes(b"junk")
    (out / (LEDGER_FILE + ".tmp")).write_text('{"batchgen_ledger":1,"batch":"crash"}\n{"job":')
    summary = run_batch(path, fast_options(out, **simulated(sim)))
    assert exit_code(summary) == 0 and summary.submitted == 0
    assert list((out / ".tmp").iterdir()) == []
    assert not (out / (LEDGER_FILE + ".tmp")).exists()
    check_folder(out)


@pytest.mark.slow
@pytest.mark.waits
def test_two_runs_at_once_one_refuses_the_other_finishes(tmp_path: Path) -> None:
    jobs = 12
    path = write_manifest(tmp_path, manifest_text("twice", jobs, concurrency=jobs))
    out = tmp_path / "out"
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    clock = PausedClock()
    # Tasks long enough that no poll during the pause finds one overdue (which would back the
    # first run's polling off), all in flight at once.
    with running_simulator(SimConfig(task_seconds=2.0, task_jitter=0.02), clock=clock) as sim:
        argv = [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", sim.api_base_url,
                "--output", str(out), "--quiet"]
        first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_running(first, lambda: sim.stats.tasks_created >= 2)  # it holds the folder, working
            clock.pause()  # no task finishes, so the first run still holds the folder however slow the second is
            second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            during = cli("status", str(out), "--json")
            clock.resume()
            out1, err1 = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        created = sim.stats.tasks_created
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"another batchgen (pid {first.pid} on " in second.stderr
    assert "is already running this batch" in second.stderr
    assert "Traceback" not in second.stderr and second.stdout == ""
    assert during.returncode == 0 and json.loads(during.stdout)["batch"] == "twice"
    assert first.returncode == 0, out1 + err1
    assert created == jobs
    assert check_folder(out).states == {"done": jobs}


def test_collect_on_a_batch_with_nothing_submitted_says_to_run_it(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_text("crash", JOBS))
    sim = fast_sim()
    summary = run_batch(path, fast_options(tmp_path / "out", **simulated(sim)), "collect")
    assert summary.pending == JOBS and sim.stats.submits == 0
    assert f"`batchgen run {path}` submits them" in render_summary(summary, path)
    assert "run the same command again" not in render_summary(summary, path)
