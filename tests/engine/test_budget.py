"""The hard budget (max_cost): no submit that could pass it is sent, whatever is in flight, in
shards or after a kill; what was paid for is collected; exit 5; raising it goes on."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import pytest
from trio.testing import MockClock

from batchgen.cli.exitcodes import exit_code
from batchgen.cli.render import render_summary
from batchgen.engine.budget import Budget
from batchgen.engine.events import Starting
from batchgen.engine.summary import RunOutcome
from batchgen.errors import ManifestError, UsageError
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.shards import Shard
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.ledger import LEDGERS_DIR
from batchgen.storage.spend import Spend
from batchgen.storage.status import batch_status
from faultkit import fast_options, manifest_text, run_batch, simulated, write_manifest


def simulator(**config) -> Simulator:
    return Simulator(SimConfig(task_seconds=2.0, task_jitter=0.5, **config), clock=anyio.current_time)


def budget_run(manifest: Path, out: Path, sim: Simulator, **extra):
    options = fast_options(out, simulated=True, **simulated(sim), **extra)
    return run_batch(manifest, options, clock=MockClock(autojump_threshold=0))


def tasks_in_ledgers(out: Path) -> int:
    """Tasks with an id in every ledger of the folder, counted from the lines themselves."""
    paths = [out / "ledger.jsonl", *sorted((out / LEDGERS_DIR).glob("*.jsonl"))]
    count = 0
    for path in paths:
        if not path.is_file():
            continue
        for raw in path.read_bytes().splitlines():
            event = orjson.loads(raw)
            if event.get("state") == "submitted" and not event.get("again"):
                count += 1
    return count


def priced(name: str, jobs: int, *, price: float = 0.25, max_cost: float | None = None,
           concurrency: int = 8, extra: str = "") -> str:
    text = f"price_per_image: {price}\n" + extra
    if max_cost is not None:
        text += f"max_cost: {max_cost}\n"
    return manifest_text(name, jobs, concurrency=concurrency, extra=text)


def test_the_budget_stops_submits_collects_what_was_paid_and_exits_5(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, priced("b", 20, max_cost=1.5, concurrency=8))
    out = tmp_path / "out"
    sim = simulator()
    summary = budget_run(manifest, out, sim)
    # 1.5 at 0.25 pays for 6 tasks, with 8 allowed in flight at once: never a 7th.
    assert sim.stats.tasks_created == 6
    assert summary.done == 6 and summary.outstanding == 0  # every paid task collected
    assert summary.outcome is RunOutcome.BUDGET and exit_code(summary) == 5
    assert "stopped by the budget" in render_summary(summary, str(manifest))
    assert summary.spend == Spend(6, 0.25, 1.5)
    report = batch_status(manifest, out)
    assert report.spent == 1.5 and report.max_cost == 1.5
    assert report.to_json()["spent"] == 1.5 and report.to_json()["max_cost"] == 1.5
    # The folder alone (no manifest) knows the budget from the run it recorded.
    assert batch_status(out).to_json()["max_cost"] == 1.5


def test_raising_the_budget_goes_on_and_the_same_budget_sends_nothing(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, priced("b", 10, max_cost=1.0))
    out = tmp_path / "out"
    sim = simulator()
    assert exit_code(budget_run(manifest, out, sim)) == 5
    assert sim.stats.tasks_created == 4
    again = budget_run(manifest, out, sim)  # the spend is read back from the ledger
    assert exit_code(again) == 5 and sim.stats.tasks_created == 4 and again.submitted == 0
    more = budget_run(manifest, out, sim, max_cost=2.0)
    assert exit_code(more) == 5 and sim.stats.tasks_created == 8 and more.done == 8
    last = budget_run(manifest, out, sim, max_cost=100.0)
    assert exit_code(last) == 0 and last.done == 10 and sim.stats.tasks_created == 10
    assert tasks_in_ledgers(out) == 10


def test_a_failed_jobs_task_is_paid_for_and_counts(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, priced("b", 12, price=1.0, max_cost=6))
    out = tmp_path / "out"
    sim = simulator(fault_task_failed=0.5, fault_seed=3)
    summary = budget_run(manifest, out, sim)
    assert sim.stats.tasks_created == 6
    assert summary.failed > 0 and summary.done + summary.failed == 6
    assert exit_code(summary) == 5
    assert batch_status(manifest, out).spent == 6.0


def test_shards_together_never_pass_the_budget_even_rerun(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, priced("b", 40, price=1.0, max_cost=10))
    out = tmp_path / "out"
    sim = simulator()
    # An unsharded run spent 4 first: the shards share the 6 left (2 each).
    assert exit_code(budget_run(manifest, out, sim, max_cost=4)) == 5
    for index in (0, 1, 2, 0, 1, 2):  # each shard twice: a rerun takes nothing more
        summary = budget_run(manifest, out, sim, shard=Shard(index, 3))
        assert exit_code(summary) == 5
    assert sim.stats.tasks_created == 10 == tasks_in_ledgers(out)
    assert batch_status(out).spent == 10.0


def test_shards_of_a_budget_that_does_not_split_evenly_spend_it_all(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, priced("b", 40, price=1.0, max_cost=7))
    out = tmp_path / "out"
    sim = simulator()
    for index in range(3):
        budget_run(manifest, out, sim, shard=Shard(index, 3))
    assert sim.stats.tasks_created == 7  # 3 + 2 + 2


def test_max_cost_needs_a_price(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("b", 3, extra="max_cost: 5\n"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(manifest)
    assert "max_cost" in str(caught.value) and "price_per_image" in str(caught.value)
    plain = write_manifest(tmp_path, manifest_text("b", 3), name="plain.yaml")
    sim = simulator()
    with pytest.raises(UsageError):
        budget_run(plain, tmp_path / "out", sim, max_cost=5.0)
    assert sim.stats.tasks_created == 0


class _Watch:
    """A reporter that notes what the start line said and how many tasks existed then."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.starting: Starting | None = None
        self.tasks_then = -1

    def notice(self, notice) -> None:
        if isinstance(notice, Starting):
            self.starting = notice
            self.tasks_then = self.sim.stats.tasks_created

    async def watch(self, stats) -> None:
        await anyio.sleep_forever()


def test_the_start_line_shows_spent_and_budget_before_the_first_submit(tmp_path: Path) -> None:
    from batchgen.cli.render import _starting

    manifest = write_manifest(tmp_path, priced("b", 6, max_cost=1.0))
    sim = simulator()
    watch = _Watch(sim)
    budget_run(manifest, tmp_path / "out", sim, reporter=watch)
    assert watch.tasks_then == 0 and watch.starting is not None
    assert "budget: spent 0 of max_cost 1 (0 task(s) at 0.25); 4 more image(s) fit" in \
        _starting(watch.starting, None)


class _Enough(Exception):
    pass


class _StopAtStart(_Watch):
    def notice(self, notice) -> None:
        super().notice(notice)
        if isinstance(notice, Starting):
            raise _Enough


@pytest.mark.parametrize("extra, expect", [
    ("", "cost unknown (no price_per_image)"),
    ("price_per_image: 0.01\n", "~100 at price_per_image")])
def test_a_big_run_without_a_budget_says_its_count_and_estimate_before_paying(
        tmp_path: Path, extra: str, expect: str) -> None:
    from batchgen.cli.render import _starting

    manifest = write_manifest(tmp_path, manifest_text("big", 10_001, extra=extra))
    sim = simulator()
    watch = _StopAtStart(sim)
    with pytest.raises(_Enough):
        budget_run(manifest, tmp_path / "out", sim, reporter=watch)
    assert watch.tasks_then == 0 and sim.stats.tasks_created == 0
    line = _starting(watch.starting, None)
    assert "10,001 job(s) to submit: ~" in line
    assert expect.replace("~100 ", "~100.01 ") in line and "no max_cost caps the spend" in line
    small = write_manifest(tmp_path, manifest_text("small", 10_000, extra=extra), name="s.yaml")
    watch = _StopAtStart(sim)
    with pytest.raises(_Enough):
        budget_run(small, tmp_path / "small", sim, reporter=watch)
    assert "job(s) to submit" not in _starting(watch.starting, None)


def test_submits_on_their_way_hold_the_budget() -> None:
    tasks = [0]
    budget = Budget(2, lambda: tasks[0], lambda: Spend(tasks[0], 1.0, 2.0))
    first, second = budget.hold(), budget.hold()
    assert first is not None and second is not None and budget.hold() is None
    first.release()
    first.release()  # twice is harmless
    assert budget.held == 1 and budget.hold() is not None


def test_a_cut_by_max_jobs_or_the_budget_leaves_an_even_sample_with_order_spread(tmp_path: Path) -> None:
    from batchgen.storage.ledger import Ledger

    text = ('name: o\nprompt: "a {style} {subject}"\nsize: "256*256"\norder: spread\n'
            'price_per_image: 1\nmatrix:\n  style: [oil, ink, pencil]\n'
            '  subject: [fox, owl, cat, dog]\n')
    manifest = write_manifest(tmp_path, text)
    jobs = {j.job_id: j for j in load_manifest(manifest).jobs()}
    for cut in ({"max_jobs": 4}, {"max_cost": 4.0}):
        out = tmp_path / f"out-{len(cut)}-{next(iter(cut))}"
        budget_run(manifest, out, simulator(), **cut)
        done = [jobs[i] for i, rec in Ledger.read(out).records.items() if rec.state == "done"]
        assert len(done) == 4
        assert {j.axes["subject"] for j in done} == {"fox", "owl", "cat", "dog"}
        assert {j.axes["style"] for j in done} == {"oil", "ink", "pencil"}


def test_a_shards_start_line_says_its_share(tmp_path: Path) -> None:
    from batchgen.cli.render import _starting

    manifest = write_manifest(tmp_path, priced("b", 40, price=1.0, max_cost=7))
    sim = simulator()
    watch = _Watch(sim)
    budget_run(manifest, tmp_path / "out", sim, shard=Shard(1, 3), reporter=watch)
    assert ("budget: spent 0 of max_cost 7 (0 task(s) at 1); 7 more image(s) fit, 2 of them "
            "in this shard's share") in _starting(watch.starting, None)
    assert sim.stats.tasks_created == 2
