"""The live status file: the newest state of recently changed jobs, tailed from the ledger."""

from __future__ import annotations

from pathlib import Path

from batchgen.job import Failed, Failure, Job
from batchgen.storage.ledger import Ledger
from batchgen.storage.live import STATUS_FILE, LiveStatus, read_status, write_idle_status
import anyio
from trio.testing import MockClock

from batchgen.engine.runner import Batch
from batchgen.manifest import load_manifest
from batchgen.simulator import SimConfig, Simulator
from faultkit import fast_options, manifest_text, simulated, write_manifest
from vclock import run_virtual


def job(n: int) -> Job:
    return Job(job_id=f"{n:016x}", index=n, request={"prompt": f"p{n}", "seed": n, "size": "256*256",
                                                     "output_format": "png"},
               axes={"n": n, "style": "oil"}, replica=0, name=f"img-{n}")


def test_each_change_of_a_job_shows_as_its_newest_state(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    try:
        live = LiveStatus(tmp_path, ledger)
        ledger.submitting(job(1))
        live.refresh()
        (entry,) = read_status(tmp_path)["jobs"]
        assert entry["state"] == "running" and entry["axes"] == {"n": 1, "style": "oil"}
        ledger.submitted(job(1).job_id, "task-1")
        ledger.generated(job(1).job_id, 77)
        ledger.done(job(1).job_id, "images/img-1.png", 10, "0" * 64)
        ledger.submitting(job(2))
        ledger.failed(job(2).job_id, Failed(Failure.REJECTED, "no", "ILLEGAL_PROMPT"))
        live.refresh()
        status = read_status(tmp_path)
        one, two = status["jobs"]
        assert (one["state"], one["file"], one["task"], one["seed"]) == ("done", "images/img-1.png", "task-1", 77)
        assert one["axes"] == {"n": 1, "style": "oil"}  # kept from the submit
        assert (two["state"], two["label"]) == ("failed", "ILLEGAL_PROMPT") and "no" in two["reason"]
        assert one["seq"] < two["seq"] == status["seq"] and status["running"] is True
        live.close()
        assert read_status(tmp_path)["running"] is False
    finally:
        ledger.close()


def test_only_the_latest_jobs_are_kept_and_what_fell_out_is_said(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    try:
        live = LiveStatus(tmp_path, ledger, capacity=5)
        for n in range(12):
            ledger.submitting(job(n))
        live.refresh()
        status = read_status(tmp_path)
        assert [e["job"] for e in status["jobs"]] == [job(n).job_id for n in range(7, 12)]
        assert status["dropped"] == 7 and status["seq"] == 12  # a viewer at seq < 7 missed some
    finally:
        ledger.close()


def test_a_line_still_being_written_waits_for_its_end(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    try:
        live = LiveStatus(tmp_path, ledger)
        with open(tmp_path / "ledger.jsonl", "ab") as fh:
            fh.write(b'{"job":"aaaaaaaaaaaaaaaa","state":"done","file":"images/a.png"')
        live.refresh()
        assert read_status(tmp_path)["jobs"] == []
        with open(tmp_path / "ledger.jsonl", "ab") as fh:
            fh.write(b',"bytes":1}\n')
        live.refresh()
        assert read_status(tmp_path)["jobs"][0]["file"] == "images/a.png"
    finally:
        ledger.close()


def test_what_was_on_disk_before_the_run_is_not_news(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    ledger.submitting(job(1))
    ledger.close()
    ledger = Ledger.open(tmp_path, "b")
    try:
        live = LiveStatus(tmp_path, ledger)
        ledger.submitted(job(1).job_id, "t")   # the task an earlier run left out
        live.refresh()
        (entry,) = read_status(tmp_path)["jobs"]
        assert entry["state"] == "running" and entry["axes"]["n"] == 1  # axes from the ledger's memory
    finally:
        ledger.close()


def test_an_idle_status_never_replaces_a_run_s(tmp_path: Path) -> None:
    assert write_idle_status(tmp_path, "b") is True
    assert read_status(tmp_path)["running"] is False and read_status(tmp_path)["run"] is None
    (tmp_path / STATUS_FILE).write_text('batchgenStatus({"run": "x", "running": true});\n')
    assert write_idle_status(tmp_path, "b") is False
    assert read_status(tmp_path)["run"] == "x"
    (tmp_path / STATUS_FILE).write_text("garbage")
    assert read_status(tmp_path) is None


def test_a_run_leaves_a_status_file_that_lists_what_it_did(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("live", 30))
    sim = Simulator(SimConfig(task_seconds=5, task_jitter=1), clock=anyio.current_time)
    batch = Batch(load_manifest(manifest), fast_options(tmp_path / "out", **simulated(sim)))
    summary = run_virtual(batch.run, clock=MockClock(autojump_threshold=0))  # no deadline: see viewkit
    assert summary.done == 30
    status = read_status(tmp_path / "out")
    assert status["batch"] == "live" and status["running"] is False
    assert sorted(e["state"] for e in status["jobs"]) == ["done"] * 30
    assert all(e["file"].startswith("images/img-") and e["task"] for e in status["jobs"])
    assert status["progress"] == {"planned": 30, "done": 30, "failed_this_run": 0, "in_flight": 0}
    assert not (tmp_path / "out" / ".tmp" / "status.js.tmp").exists()
