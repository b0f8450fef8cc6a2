"""Tasks that cannot be followed any further are redone: a task the provider forgot, by run
itself; a task still stuck after its timeout, by retry after one more poll. Retry with nothing
failed sends nothing, and counts what it did send."""

from __future__ import annotations

from pathlib import Path

import anyio
from trio.testing import MockClock

from batchgen.cli.exitcodes import exit_code
from batchgen.cli.main import main
from batchgen.cli.render import render_summary
from batchgen.job import JobState
from batchgen.manifest.loader import load_manifest
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.ledger import Ledger
from faultkit import check_folder
from storagekit import VirtualWall, fast_sim, options, run, seeds_manifest

TWELVE = list(range(1, 13))


def test_retry_polls_a_timed_out_task_once_more_then_submits_it_anew(tmp_path: Path) -> None:
    # The default task_timeout of 30 minutes, in virtual time.
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, TWELVE)
    clock = MockClock(autojump_threshold=0)
    sim = Simulator(SimConfig(task_seconds=20, task_jitter=5, fault_stuck=0.3, fault_seed=1),
                    clock=anyio.current_time)
    first = run(path, options(out, sim, clock=VirtualWall()), clock=clock)
    stuck = first.failures["TIMEOUT"]
    assert stuck > 0 and first.done == 12 - stuck
    old_tasks = {rec.task_id for rec in Ledger.read(out).records.values() if rec.state == JobState.FAILED}
    polls_before = {t: sim.stats.polls_by_task[t] for t in old_tasks}
    sim.state.config.fault_stuck = 0.0  # new tasks finish; the old ones stay stuck
    again = run(path, options(out, sim, clock=VirtualWall()), mode="retry", clock=clock)
    assert (exit_code(again), again.done, again.resubmitted_stuck, again.submitted) == (0, 12, stuck, stuck)
    assert again.elapsed < 300  # not another 30 minutes per stuck task
    assert all(sim.stats.polls_by_task[t] == polls_before[t] + 1 for t in old_tasks)
    assert "may still finish, and be billed" in render_summary(again, path)
    assert sim.stats.tasks_created == 12 + stuck
    check_folder(out)


def test_collect_polls_a_timed_out_task_once_and_leaves_it_for_retry(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, [1, 2, 3, 4])
    clock = MockClock(autojump_threshold=0)
    sim = Simulator(SimConfig(task_seconds=20, fault_stuck=1.0), clock=anyio.current_time)
    first = run(path, options(out, sim, clock=VirtualWall()), clock=clock)
    assert first.failures["TIMEOUT"] == 4
    later = run(path, options(out, sim, clock=VirtualWall()), mode="collect", clock=clock)
    assert later.failures["TIMEOUT"] == 4 and later.submitted == 0 and later.elapsed < 60
    text = render_summary(later, path)
    assert f"`batchgen retry {path}` runs the 4 retryable one(s) again (a timed-out task" in text


def test_run_redoes_the_jobs_an_interrupted_simulated_run_left_at_a_forgotten_simulator(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, TWELVE)
    run(path, options(out, fast_sim(), max_jobs=4))
    # As if that run had died with five tasks out at its in-process simulator, now gone.
    ledger = Ledger.open(out, "seeds")
    jobs = [j for j in load_manifest(path).jobs() if ledger.get(j.job_id) is None][:5]
    for n, job in enumerate(jobs):
        ledger.submitting(job)
        ledger.submitted(job.job_id, f"task-of-a-simulator-long-gone-{n}")
    ledger.close()
    sim = fast_sim()  # a fresh --simulate: it never heard of those tasks
    summary = run(path, options(out, sim))
    assert (exit_code(summary), summary.done, summary.failed, summary.redone) == (0, 12, 0, 5)
    assert sim.stats.tasks_created == 8
    check_folder(out)


def test_a_task_not_found_left_by_collect_is_redone_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, [1, 2, 3])
    run(path, options(out, fast_sim(), max_jobs=1))
    ledger = Ledger.open(out, "seeds")
    job = [j for j in load_manifest(path).jobs() if ledger.get(j.job_id) is None][0]
    ledger.submitting(job)
    ledger.submitted(job.job_id, "forgotten-task")
    ledger.close()
    collected = run(path, options(out, fast_sim()), mode="collect")
    assert collected.failures == {"TASK_NOT_FOUND": 1} and collected.submitted == 0
    done = run(path, options(out, fast_sim()))
    assert (done.done, done.failed) == (3, 0)


def test_retry_with_nothing_failed_says_so_and_sends_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, TWELVE)
    run(path, options(out, fast_sim(), max_jobs=5))
    sim = fast_sim()
    summary = run(path, options(out, sim), mode="retry")
    assert summary.nothing_to_retry and sim.stats.api_requests == 0
    assert (exit_code(summary), summary.done, summary.pending) == (0, 5, 7)
    text = render_summary(summary, path)
    assert text.startswith("nothing to retry: no job of the manifest has failed; nothing was sent")
    assert f"7 job(s) not submitted yet: `batchgen run {path}` submits them." in text


def test_retry_include_rejected_counts_what_it_sent(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, [1, 2, 3], **{"a lighthouse": "a forbidden lighthouse"})
    sim = fast_sim()
    first = run(path, options(out, sim))
    assert first.failures["ILLEGAL_PROMPT"] == 3 and first.refused == 3 and first.submitted == 3
    plain = run(path, options(out, sim), mode="retry")
    assert plain.nothing_to_retry and sim.stats.submits == 3 and exit_code(plain) == 1
    assert "--include-rejected` sends them anyway" in render_summary(plain, path)
    forced = run(path, options(out, sim, include_rejected=True), mode="retry")
    assert (forced.submitted, forced.refused, sim.stats.submits) == (3, 3, 6)
    assert "(3 submitted, 3 of them refused by the provider" in render_summary(forced, path)


def test_retry_takes_max_jobs_like_run(tmp_path: Path, capsys) -> None:
    path = seeds_manifest(tmp_path, [1, 2, 3, 4], **{"a lighthouse": "a forbidden lighthouse"})
    out = str(tmp_path / "out")
    common = ["--simulate", "--output", out, "--quiet", "--sim-task-seconds", "0"]
    assert main(["run", str(path), *common]) == 1
    assert main(["retry", str(path), *common, "--include-rejected", "--max-jobs", "2"]) == 1
    text = capsys.readouterr().out
    assert "(2 submitted, 2 of them refused by the provider" in text
