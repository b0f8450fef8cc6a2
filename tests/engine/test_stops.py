"""Graceful stops over loopback through the CLI: the balance runs out, the key is revoked.

The in-process versions are in test_runner.py; here the real command meets the real wire. What
must hold: submitting stops, every task already paid for is collected (balance) or kept by id
(key), the exit code is 3 with a message that says what to do, and after the user acts the same
command finishes with exactly one task per job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pathlib import Path

import anyio
import httpx

from batchgen.cli.exitcodes import exit_code
from batchgen.storage.ledger import Ledger
from batchgen.simulator import SimConfig, Simulator, running_simulator
from faultkit import simulated, Rewriter, check_folder, cli_here, fast_options, manifest_text, run_batch, wait_running, write_manifest

KEY = "sk-stops-0123456789abcdef"


@pytest.mark.slow
def test_balance_runs_out_mid_batch_then_a_top_up_finishes(tmp_path: Path) -> None:
    # 400 BILLING_BALANCE_NOT_ENOUGH here; test_runner.py meets the 403 NOT_ENOUGH_BALANCE form.
    jobs, balance = 30, 11
    path = write_manifest(tmp_path, manifest_text("broke", jobs, concurrency=10))
    out = tmp_path / "out"
    config = SimConfig(api_key=KEY, balance=balance, balance_style="billing", task_seconds=0.05,
                       task_jitter=0.02, fault_500=0.1, fault_seed=2, retry_after="seconds")
    with running_simulator(config) as sim:
        args = ("run", str(path), "--base-url", sim.api_base_url, "--output", str(out))
        first = cli_here(*args, env={"JIEKOU_API_KEY": KEY})
        assert first.returncode == 3, first.stdout + first.stderr
        assert "out of credit" in first.stdout and "Top up" in first.stdout
        assert "Traceback" not in first.stderr
        assert first.stderr.count("out of credit") <= 1  # said once, not once per submit in flight
        assert sim.stats.tasks_created == balance
        counts = Ledger.read(out).counts()
        # Every paid task was collected before the run ended; nothing is half-way.
        assert counts["done"] == balance and counts["submitted"] == counts["generated"] == 0
        assert counts["submitting"] == 0 and counts["failed"] == 0
        assert f"{balance}/{jobs} images done" in first.stdout

        sim.state.balance = 100  # the user tops up
        second = cli_here(*args, "--quiet", env={"JIEKOU_API_KEY": KEY})
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"{jobs}/{jobs} images done" in second.stdout
        assert sim.stats.tasks_created == jobs
    assert check_folder(out).states == {"done": jobs}


@pytest.mark.slow
@pytest.mark.waits
def test_a_key_revoked_mid_batch_stops_keeps_every_task_id_and_resumes(tmp_path: Path) -> None:
    jobs = 40
    path = write_manifest(tmp_path, manifest_text("revoked", jobs, concurrency=6))
    out = tmp_path / "out"
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    with running_simulator(SimConfig(api_key=KEY, task_seconds=0.3, task_jitter=0.05)) as sim:
        argv = [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", sim.api_base_url,
                "--output", str(out), "--quiet"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_running(proc, lambda: sim.stats.tasks_created >= 10)
            sim.config.api_key = "sk-someone-else-entirely-000"  # revoked
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 3, stdout + stderr
        assert "refused the API key" in stdout and "JIEKOU_API_KEY" in stdout
        assert "Traceback" not in stderr
        created = sim.stats.tasks_created
        ledger = Ledger.read(out)
        known = {rec.task_id for rec in ledger.records.values() if rec.task_id}
        assert len(known) == created == ledger.stats.tasks_created  # no id lost in the stop
        assert ledger.counts()["submitting"] == 0

        sim.config.api_key = KEY  # a new key, or the old one restored
        again = cli_here("run", str(path), "--base-url", sim.api_base_url, "--output", str(out), "--quiet",
                    env={"JIEKOU_API_KEY": KEY})
        assert again.returncode == 0, again.stdout + again.stderr
        assert sim.stats.tasks_created == jobs
    assert check_folder(out).states == {"done": jobs}


def test_a_stop_waits_for_submits_already_sent_so_no_paid_task_loses_its_id(tmp_path: Path) -> None:
    """The key is refused on a poll while a submit is sent but unanswered (its task exists at
    the provider): the stop lets it bring back its id instead of cutting it off, and the
    submits still waiting for their turn are withdrawn, not sent."""
    jobs = 8
    path = write_manifest(tmp_path, manifest_text("inflight", jobs, concurrency=4))
    out = tmp_path / "out"
    refused = json.dumps({"code": 403, "reason": "INVALID_API_KEY", "message": "invalid API key"})

    async def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "POST" and b"number 1\"" not in request.content:
            await anyio.sleep(0.5)  # created at the provider; the answer is slow to come back
        elif request.url.path.endswith("/task-result"):
            return httpx.Response(403, content=refused.encode(), request=request)
        return response

    sim = Simulator(SimConfig(task_seconds=0.01, task_jitter=0.0))
    summary = run_batch(path, fast_options(out, **simulated(Rewriter(sim, rewrite))), limit=30)
    assert exit_code(summary) == 3 and summary.stop_kind == "auth"
    ledger = Ledger.read(out)
    assert ledger.counts()["submitting"] == 0 and summary.possibly_created == 0
    assert sim.stats.tasks_created == ledger.stats.tasks_created >= 2
    assert len({rec.task_id for rec in ledger.records.values() if rec.task_id}) == sim.stats.tasks_created
    assert ledger.counts()["pending"] + ledger.counts()["submitted"] + ledger.counts()["generated"] > 0
