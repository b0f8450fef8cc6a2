"""Disk and filesystem trouble: an output path that cannot be a folder, a read-only mount, a full disk.

Root ignores permission bits, so real read-only and full filesystems are made with a small
tmpfs in a private mount namespace (``unshare -rm``): the batch runs as a subprocess inside it,
and nothing is mounted outside the test. Every case must end with exit 4 and a message that
says what to do (no traceback), a ledger that replays with every paid task id in it, and a
next run that finishes without paying for any task twice.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchgen.storage.ledger import LEDGER_FILE, Ledger
from batchgen.simulator import SimConfig, running_simulator
from faultkit import check_folder, cli, cli_here, manifest_text, write_manifest

KEY = "sk-disk-0123456789abcdef"


def _namespaces_work() -> str | None:
    """None if ``unshare -rm`` can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()}"
    return None


_WHY_NOT = _namespaces_work()
needs_mounts = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))


def in_namespace(script: str, cwd: Path, env: dict[str, str] | None = None,
                 timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run a shell script in a private user + mount namespace (mounts vanish with it)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def batchgen_cmd(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "batchgen", *args])


def test_an_output_path_below_a_regular_file_stops_with_exit_4(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_text("disk", 3))
    (tmp_path / "plain-file").write_text("I am not a folder")
    result = cli_here("run", str(path), "--simulate", "--output", str(tmp_path / "plain-file" / "out"))
    assert result.returncode == 4, result.stderr
    assert "cannot create the batch folder" in result.stderr and "Not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "plain-file").read_text() == "I am not a folder"


@pytest.mark.slow
@needs_mounts
def test_a_read_only_output_folder_stops_with_exit_4_and_status_still_reads_it(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_text("disk", 4))
    out = tmp_path / "out"
    done = cli("run", str(path), "--simulate", "--sim-task-seconds", "0", "--output", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    write_manifest(tmp_path, manifest_text("disk", 6))  # two more jobs to do
    before = (out / LEDGER_FILE).read_bytes()
    run = batchgen_cmd("run", str(path), "--simulate", "--output", str(out), "--quiet")
    status = batchgen_cmd("status", str(out))
    fresh = batchgen_cmd("run", str(path), "--simulate", "--output", str(tmp_path / "ro" / "new"))
    result = in_namespace(
        f"mount --bind out out && mount -o remount,bind,ro out && "
        f"mkdir ro && mount -t tmpfs -o ro tmpfs ro && "
        f"{{ {run}; echo \"run=$?\"; {status}; echo \"status=$?\"; {fresh}; echo \"fresh=$?\"; }}",
        cwd=tmp_path)
    assert "run=4" in result.stdout and "status=0" in result.stdout and "fresh=4" in result.stdout, \
        result.stdout + result.stderr
    assert "cannot write in the batch folder" in result.stderr and "Read-only file system" in result.stderr
    assert "cannot create the batch folder" in result.stderr
    assert "4/4 done" in result.stdout  # status read the read-only batch
    assert "Traceback" not in result.stderr
    assert (out / LEDGER_FILE).read_bytes() == before


@pytest.mark.slow
@needs_mounts
@pytest.mark.parametrize("size_k", [120, 260])
def test_a_full_disk_stops_with_exit_4_and_the_next_run_pays_nothing_twice(
        tmp_path: Path, size_k: int) -> None:
    jobs = 60
    path = write_manifest(tmp_path, manifest_text("disk", jobs, concurrency=8))
    out, snap = tmp_path / "out", tmp_path / "snap"
    out.mkdir()
    snap.mkdir()
    with running_simulator(SimConfig(task_seconds=0.05, task_jitter=0.01)) as sim:
        run = batchgen_cmd("run", str(path), "--base-url", sim.api_base_url, "--output", "out", "--quiet")
        full = in_namespace(
            f"mount -t tmpfs -o size={size_k}k tmpfs out && {run}; rc=$?; cp -a out/. snap/; exit $rc",
            cwd=tmp_path, env={"JIEKOU_API_KEY": KEY})
        created_before = sim.stats.tasks_created

        assert full.returncode == 4, full.stdout + full.stderr
        assert "the disk is full" in full.stderr and "run the same command again" in full.stderr
        assert "Traceback" not in full.stderr
        ledger = Ledger.read(snap)
        assert ledger.stats.bad_lines == 0
        ids = {rec.task_id for rec in ledger.records.values() if rec.task_id}
        # Every task the provider created is in the ledger: none left 'submitting' by the stop.
        assert len(ids) == created_before == ledger.stats.tasks_created
        assert ledger.counts()["submitting"] == 0
        assert 0 < ledger.counts()["done"] < jobs
        check_folder(snap)  # what was written before the disk filled is whole

        # Space freed (the folder moved somewhere roomy): the same command finishes.
        again = subprocess.run(
            [sys.executable, "-m", "batchgen", "run", str(path), "--base-url", sim.api_base_url,
             "--output", str(snap), "--quiet"],
            env={**os.environ, "JIEKOU_API_KEY": KEY}, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "being submitted when an earlier run stopped" not in again.stdout
        assert sim.stats.tasks_created == jobs
    assert check_folder(snap).states == {"done": jobs}


@needs_mounts
def test_the_ledger_keeps_room_for_task_ids_when_the_disk_fills(tmp_path: Path) -> None:
    """The append that meets ENOSPC and those of submits still in flight are still written."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from batchgen.errors import OutputError
        from batchgen.job import Job
        from batchgen.storage.ledger import Ledger
        ledger = Ledger.open(Path("small/out"), "disk")
        filler = Path("small/filler")
        try:
            with open(filler, "wb") as fh:  # everything the disk has left
                while True:
                    fh.write(b"x" * 4096)
                    fh.flush()
        except OSError:
            pass
        stops, n = 0, 0
        while stops < 5:
            n += 1
            job = Job(job_id=f"job{{n}}", index=n, request={{"prompt": "p" * 300}}, axes={{}},
                      replica=0, name=f"img-{{n}}")
            try:
                ledger.submitting(job)
            except OutputError:
                stops += 1
            try:
                ledger.submitted(job.job_id, f"task-{{n}}")
            except OutputError as exc:
                stops += 1
                message = str(exc)
        ledger.close()
        print(json.dumps({{"appended": n, "message": message}}))
    """)
    (tmp_path / "small").mkdir()
    result = in_namespace(f"mount -t tmpfs -o size=200k tmpfs small && {sys.executable} -c {shlex.quote(script)}"
                          f" && cp -a small/out/. copy/", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "the disk is full" in found["message"]
    replay = Ledger.read(tmp_path / "copy")
    assert replay.stats.bad_lines == 0
    # Every id handed to the ledger after the disk filled is there.
    assert {rec.task_id for rec in replay.records.values()} == {f"task-{n}" for n in range(1, found["appended"] + 1)}
    assert replay.counts() == {"submitted": found["appended"]}
