"""Killing the runner for real (SIGKILL, Ctrl-C) over loopback HTTP, then running it again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from batchgen.simulator import SimConfig, running_simulator
from faultkit import kill_when, wait_until

KEY = "sk-resume-test-key-0123456789"
MANIFEST = """\
name: resume
prompt: "a {thing} in the style of {style}"
size: "256*256"
output_format: webp
concurrency: 8
filename: "{thing}-{style}-{seed}"
matrix:
  thing: [fox, owl, whale, bee, crow]
  style: [ink, oil]
  seed: {from: 1, to: JOBS_PER_CELL}
"""


def start(tmp_path: Path, base_url: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "JIEKOU_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "batchgen", "run", str(tmp_path / "m.yaml"), "--base-url", base_url,
         "--output", str(tmp_path / "out"), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ledger_lines(tmp_path: Path) -> int:
    try:
        with open(tmp_path / "out" / "ledger.jsonl", "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def wait_for_lines(tmp_path: Path, count: int, proc: subprocess.Popen) -> None:
    wait_until(proc, lambda: ledger_lines(tmp_path) >= count)


def check_outputs(tmp_path: Path, expected: int) -> None:
    images = sorted((tmp_path / "out" / "images").rglob("*.webp"))
    sidecars = sorted((tmp_path / "out" / "images").rglob("*.json"))
    assert len(images) == expected and len(sidecars) == expected
    assert {p.stem for p in images} == {p.stem for p in sidecars}
    for path in images:
        with Image.open(path) as img:
            img.load()
            assert img.format == "WEBP" and img.size == (256, 256)
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["image"]["bytes"] == path.stat().st_size
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file()
                 and p.suffix not in (".webp", ".json", ".jsonl", ".lock", ".js") and ".tmp" not in p.parts]
    assert not leftovers


@pytest.mark.slow
@pytest.mark.waits
def test_sigkill_at_random_moments_then_resume_finishes_without_paying_twice(tmp_path: Path) -> None:
    jobs = 5 * 2 * 6
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("JOBS_PER_CELL", "6"))
    rng = random.Random(1234)
    kills = 0
    with running_simulator(SimConfig(task_seconds=0.15, task_jitter=0.05)) as sim:
        for _ in range(5):
            lines = ledger_lines(tmp_path)
            proc = start(tmp_path, sim.api_base_url, "--quiet")
            target = lines + rng.randint(1, 40)
            kills += kill_when(proc, lambda: ledger_lines(tmp_path) >= target)
        final = start(tmp_path, sim.api_base_url, "--quiet")
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, out + err
        created = sim.stats.tasks_created
    assert kills >= 3
    assert "Traceback" not in err
    assert created <= jobs + kills
    check_outputs(tmp_path, jobs)


@pytest.mark.slow
@pytest.mark.waits
def test_first_ctrl_c_finishes_what_is_in_flight_second_leaves_at_once(tmp_path: Path) -> None:
    jobs = 5 * 2 * 4
    (tmp_path / "m.yaml").write_text(MANIFEST.replace("JOBS_PER_CELL", "4"))
    with running_simulator(SimConfig(task_seconds=0.6, task_jitter=0.1)) as sim:
        proc = start(tmp_path, sim.api_base_url)
        wait_for_lines(tmp_path, 12, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, out + err
        assert "stopping: no new submits" in out and "Traceback" not in err
        states = _states(tmp_path)
        assert "submitted" not in states.values() and "generated" not in states.values()
        assert 0 < list(states.values()).count("done") < jobs

        proc = start(tmp_path, sim.api_base_url)
        wait_for_lines(tmp_path, ledger_lines(tmp_path) + 6, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "leaving now" in out and "Traceback" not in err

        final = start(tmp_path, sim.api_base_url, "--quiet")
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, out + err
        assert sim.stats.tasks_created == jobs
    check_outputs(tmp_path, jobs)


def _states(tmp_path: Path) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in (tmp_path / "out" / "ledger.jsonl").read_text().splitlines():
        event = json.loads(line)
        if "job" in event:
            states[event["job"]] = event["state"]
    return states
