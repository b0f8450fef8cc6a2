"""When the provider pushes back, where real sockets or a real process matter: a dead port,
SIGTERM inside a pause, kill -9 while image URLs expire under slow downloads; and ``retry``
following the recorded task of a job that failed after generation."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from trio.testing import MockClock

from batchgen.provider.client import submits_for
from batchgen.cli.exitcodes import exit_code
from batchgen.cli.render import render_summary
from batchgen.engine.polling import PollPlanner
from batchgen.engine.runner import RunOptions
from batchgen.errors import StopKind
from batchgen.provider.client import ClientOptions
from batchgen.provider.targets import ApiKey
from batchgen.simulator import SimConfig, Simulator, running_simulator
from batchgen.storage.ledger import Ledger
from faultkit import (check_folder, cli, fast_options, kill_when, manifest_text, run_batch, simulated,
                      wait_running, write_manifest)

KEY = "sk-pushback-0123456789abcdef"


def dead_url() -> str:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- a dead port --------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["option", "manifest"])
def test_a_dead_port_stops_the_batch_naming_the_url_and_where_it_came_from(tmp_path: Path,
                                                                           given: str) -> None:
    url = dead_url()
    extra = f"base_url: {url}\n" if given == "manifest" else ""
    path = write_manifest(tmp_path, manifest_text("dead", 40, concurrency=8, extra=extra))
    out = tmp_path / "out"
    # A manifest's own host takes the user's word in the environment (docs/security.md).
    options = fast_options(out, client=ClientOptions(unreachable_after=0.5), api_key=ApiKey(KEY),
                           **({"base_url": url} if given == "option" else
                              {"environ": {"BATCHGEN_TRUSTED_HOSTS": url.split("//")[1]}}))
    started = time.monotonic()
    summary = run_batch(path, options, limit=30)
    assert time.monotonic() - started < 5
    assert summary.stop_kind is StopKind.UNREACHABLE and exit_code(summary) == 3
    text = render_summary(summary, path)
    assert url in text and ("--base-url" if given == "option" else f"base_url in {path}") in text
    assert "no job was marked failed" in text
    ledger = Ledger.read(out)
    assert ledger.counts()["failed"] == 0 and ledger.counts()["submitting"] == 0

    sim = Simulator(SimConfig(task_seconds=0.02, task_jitter=0.0))   # the right URL now
    again = run_batch(path, fast_options(out, **simulated(sim)))
    assert exit_code(again) == 0 and again.done == 40 and sim.stats.tasks_created == 40


@pytest.mark.slow
@pytest.mark.waits
def test_the_cli_given_a_dead_port_exits_3_within_30_seconds(tmp_path: Path) -> None:
    url = dead_url()
    path = write_manifest(tmp_path, manifest_text("dead", 400, concurrency=32))
    started = time.monotonic()
    result = cli("run", str(path), "--base-url", url, "--output", str(tmp_path / "out"),
                 env={"JIEKOU_API_KEY": KEY}, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 3, result.stdout + result.stderr
    assert took < 30, took
    assert f"cannot reach the API at {url} (from --base-url)" in result.stdout
    assert "Traceback" not in result.stderr
    assert Ledger.read(tmp_path / "out").counts()["failed"] == 0


# -- SIGTERM inside a pause -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.waits
def test_sigterm_inside_a_pause_is_out_within_10_seconds_and_submits_nothing_more(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_text("term", 32, concurrency=32))
    out = tmp_path / "out"
    config = SimConfig(task_seconds=2.0, task_jitter=0.2, max_in_flight=4, retry_after="seconds")
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    with running_simulator(config) as sim:
        proc = subprocess.Popen([sys.executable, "-m", "batchgen", "run", str(path), "--base-url",
                                 sim.api_base_url, "--output", str(out)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_running(proc, lambda: sim.stats.submits_by_outcome["RATE_LIMIT_EXCEEDED"] > 0)
            time.sleep(0.3)                   # inside the pause the 429 asked for
            submits = sim.stats.submits
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            stdout, stderr = proc.communicate(timeout=30)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stdout + stderr
        assert took < 10, took
        assert sim.stats.submits <= submits + 1   # one already on the wire may finish, no more
        assert "stopping: no new submits" in stdout and "Traceback" not in stderr
        counts = Ledger.read(out).counts()
        assert counts["done"] == sim.stats.tasks_created and counts["submitting"] == 0
        assert counts["failed"] == 0


# -- kill -9 while URLs expire under slow downloads -------------------------------------------------

@pytest.mark.slow
@pytest.mark.waits
def test_kill_9_under_expiring_urls_and_slow_downloads_loses_no_job_and_pays_once(tmp_path: Path) -> None:
    jobs = 48
    path = write_manifest(tmp_path, manifest_text("expiry", jobs, concurrency=16))
    out = tmp_path / "out"
    # Tasks finish faster than 16 slow downloads drain them: URLs would age in a queue.
    config = SimConfig(task_seconds=0.2, task_jitter=0.05, url_ttl=2.0, download_seconds=0.5,
                       fault_truncate=0.05, fault_seed=9)
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    kills = 0
    with running_simulator(config) as sim:
        argv = [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", sim.api_base_url,
                "--output", str(out), "--quiet"]
        for wait_for in (10, 22, 34):
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            kills += kill_when(proc, lambda: sim.stats.downloads_by_outcome["ok"] >= wait_for, limit=30)
        final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        created = sim.stats.tasks_created
        polls_per_task = sim.stats.polls / created
    assert kills == 3
    # A kill may cost each submit then on the wire (4 at once for 16 in flight), no more.
    assert created <= jobs + kills * submits_for(16)
    ledger = Ledger.read(out)
    assert ledger.counts()["done"] == jobs
    print(f"polls per task (renewals included): {polls_per_task:.2f}")
    check_folder(out, "png")


# -- retry follows the recorded task ------------------------------------------------------------------

def test_retry_fetches_an_expired_image_from_its_task_without_paying_again(tmp_path: Path) -> None:
    sim = Simulator(SimConfig(task_seconds=2.0, task_jitter=0.0, fault_expire=1.0), clock=anyio.current_time)
    path = write_manifest(tmp_path, manifest_text("follow", 6, concurrency=6, extra="task_timeout: 20\n"))
    out = tmp_path / "out"
    clock = MockClock(autojump_threshold=0)
    options = RunOptions(output=out, client=ClientOptions(), poll=PollPlanner(), **simulated(sim))
    first = run_batch(path, options, clock=clock, limit=3600)
    assert first.failures == {"EXPIRED": 6} and sim.stats.tasks_created == 6
    sim.config.fault_expire = 0.0          # the object store works again
    second = run_batch(path, options, "retry", clock=clock, limit=3600)
    assert second.done == 6 and second.failed == 0
    assert sim.stats.tasks_created == 6 and second.tasks_created == 0   # never paid twice
    check_folder(out)


def test_retry_submits_anew_only_the_jobs_whose_task_the_provider_forgot(tmp_path: Path) -> None:
    sim = Simulator(SimConfig(task_seconds=2.0, task_jitter=0.0, fault_expire=1.0, result_ttl=30.0),
                    clock=anyio.current_time)
    path = write_manifest(tmp_path, manifest_text("forgot", 6, concurrency=6, extra="task_timeout: 600\n"))
    out = tmp_path / "out"
    clock = MockClock(autojump_threshold=0)
    options = RunOptions(output=out, client=ClientOptions(), poll=PollPlanner(), **simulated(sim))
    first = run_batch(path, options, clock=clock, limit=3600)
    assert first.failures == {"EXPIRED": 6}          # renewed until the provider forgot the task
    report = render_summary(first, path)
    assert "retry" in report
    sim.config.fault_expire = 0.0
    second = run_batch(path, options, "retry", clock=clock, limit=3600)
    assert second.done == 6 and sim.stats.tasks_created == 12   # each forgotten task once more
    check_folder(out)
