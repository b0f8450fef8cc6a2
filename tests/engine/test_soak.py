"""Fault soak: small batches against a simulator with every fault on at once.

After ``run`` and a few ``retry``s every job is done, no file under its final name was ever
partial (a watcher decodes images while the batch runs), the ledger and the files agree, and
every task the simulator created is either in the ledger or was reported as possibly created.
The same at 10,000 jobs: ``tests/bench/bench_soak.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import anyio
import pytest
from PIL import Image
from trio.testing import MockClock

from batchgen.cli.exitcodes import exit_code
from batchgen.engine.polling import PollPlanner
from batchgen.provider.client import ClientOptions
from batchgen.simulator import SimConfig, Simulator, running_simulator
from faultkit import simulated, check_folder, fast_options, manifest_text, run_batch, write_manifest

KEY = "sk-soak-0123456789abcdef"
EVERY_FAULT = dict(fault_429=0.10, fault_500=0.05, fault_503=0.03, fault_drop=0.02,
                   fault_task_failed=0.03, fault_truncate=0.05, fault_expire=0.10)
MAX_RETRIES = 3


class Watcher(threading.Thread):
    """Decodes every image that appears under its final name while the batch runs."""

    def __init__(self, images: Path, fmt: str) -> None:
        super().__init__(daemon=True)
        self.images = images
        self.fmt = fmt
        self.stop = threading.Event()
        self.checked: set[tuple[str, int]] = set()
        self.broken: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.sweep()
        self.sweep()

    def sweep(self) -> None:
        try:
            paths = list(self.images.glob(f"*.{self.fmt}"))
        except OSError:
            return
        for path in paths:
            try:
                key = (path.name, path.stat().st_size)
                if key in self.checked:
                    continue
                with Image.open(path) as img:
                    img.load()
                self.checked.add(key)
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001 - any decoding failure is the finding
                self.broken.append(f"{path.name}: {exc}")


def soak(tmp_path: Path, jobs: int, options_for, sim_stats, fmt: str = "png",
         clock: MockClock | None = None) -> dict:
    """run + up to MAX_RETRIES retries; check everything; return the numbers."""
    path = write_manifest(tmp_path, manifest_text("soak", jobs, fmt=fmt, concurrency=16))
    out = tmp_path / "out"
    watcher = Watcher(out / "images", fmt)
    watcher.start()
    summaries = []
    try:
        for attempt in range(MAX_RETRIES + 1):
            summary = run_batch(path, options_for(out), "run" if attempt == 0 else "retry",
                                clock=clock)
            summaries.append(summary)
            assert summary.stopped is None, summary.stopped
            if summary.done == jobs:
                break
            # Whatever is left failed with a reason a retry can cure.
            assert summary.failed == summary.retryable_failed and summary.pending == 0, summary
    finally:
        watcher.stop.set()
        watcher.join()
    last = summaries[-1]
    assert (last.done, last.failed, last.outstanding, exit_code(last)) == (jobs, 0, 0, 0)
    assert not watcher.broken, watcher.broken
    assert len(watcher.checked) >= jobs

    report = check_folder(out, fmt)
    assert report.states == {"done": jobs} and len(report.images) == jobs
    stats = sim_stats()
    in_ledger = report.ledger.stats.tasks_created
    reported_maybe = sum(s.maybe_duplicated for s in summaries)
    # Every task the provider created is in the ledger, or is one the client reported as
    # possibly created (a drop after the request was sent); never an unreported one.
    assert stats.tasks_created == in_ledger + stats.tasks_created_but_dropped
    assert stats.tasks_created_but_dropped <= reported_maybe
    # Tasks beyond one per job were paid only for jobs whose task failed (a retry submits
    # them again) or that the provider created without telling us (the orphans above).
    failures = Counter()
    for s in summaries[:-1]:
        failures.update(s.failures)
    assert in_ledger - jobs == sum(n for reason, n in failures.items() if reason != "SUBMIT_FAILED")
    assert stats.image_requests_with_auth == 0 and stats.key_leaks == 0
    for kind in ("fault_429", "fault_500", "fault_503", "fault_truncate", "fault_expire"):
        assert stats.faults[kind] > 0, f"{kind} never fired: the soak proves nothing about it"
    return {"runs": len(summaries), "created": stats.tasks_created, "extra": stats.tasks_created - jobs,
            "orphans": stats.tasks_created_but_dropped, "reported_maybe": reported_maybe,
            "faults": dict(stats.faults), "failures": dict(failures)}


def test_soak_in_process_every_fault_at_once(tmp_path: Path) -> None:
    # In virtual time, with the provider's real pace: tasks of 2 s, the default backoff.
    sim = Simulator(SimConfig(task_seconds=2.0, task_jitter=0.5, fault_seed=11,
                              retry_after="none", **EVERY_FAULT), clock=anyio.current_time)
    # 200 jobs: enough that every fault, at the rates, fires whatever the request order.
    numbers = soak(tmp_path, 200, lambda out: fast_options(
        out, client=ClientOptions(), poll=PollPlanner(), **simulated(sim)), lambda: sim.stats,
        clock=MockClock(autojump_threshold=0))
    print("in-process soak:", numbers)
    assert numbers["faults"].get("fault_task_failed", 0) > 0 and numbers["runs"] >= 2


@pytest.mark.slow
def test_soak_over_loopback_every_fault_at_once(tmp_path: Path) -> None:
    config = SimConfig(task_seconds=0.03, task_jitter=0.01, fault_seed=5, retry_after="mixed",
                       **EVERY_FAULT)
    with running_simulator(config) as sim:
        numbers = soak(tmp_path, 120, lambda out: fast_options(
            out, base_url=sim.api_base_url, environ={"JIEKOU_API_KEY": KEY}), lambda: sim.stats,
            fmt="webp")
    print("loopback soak:", numbers)
    assert numbers["faults"].get("fault_drop", 0) > 0


def test_the_same_fault_seed_gives_the_same_faults_twice(tmp_path: Path) -> None:
    # Submit and task faults are drawn per request (body and attempt), so two runs of the same
    # batch meet the same ones whatever the interleaving. (Poll faults follow the number of
    # polls, which the finishing order, and so the scheduling, decides.)
    def once(folder: Path):
        sim = Simulator(SimConfig(task_seconds=2.0, task_jitter=0.5, fault_seed=7, retry_after="none",
                                  **EVERY_FAULT), clock=anyio.current_time)
        path = write_manifest(folder, manifest_text("replay", 100, concurrency=16))
        summary = run_batch(path, fast_options(folder / "out", client=ClientOptions(), poll=PollPlanner(),
                                               **simulated(sim)),
                            clock=MockClock(autojump_threshold=0))
        assert summary.done + summary.failed == 100
        faults = sim.stats.faults
        return (sim.stats.tasks_created, sim.stats.submits, faults["fault_429"],
                faults["fault_task_failed"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = once(tmp_path / "a"), once(tmp_path / "b")
    assert first == second
    assert first[2] > 0 and first[3] > 0  # both kinds fired: the comparison means something
