"""A batch folder knows what made it: its target, the jobs each run planned, whether it is a batch.

Simulator results never pass for real ones; ``status`` given the folder alone never calls an
unfinished batch complete; a folder holding someone else's files is never written into.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batchgen import errors
from batchgen.cli.main import main
from batchgen.cli.render import render_status
from batchgen.engine.runner import Batch
from batchgen.errors import OutputError
from batchgen.simulator import Simulator
from batchgen.storage.ledger import LEDGER_FILE, Ledger
from batchgen.storage.status import batch_status
from storagekit import fast_sim, manifest, options, run, seeds_manifest

ROOT = Path(__file__).resolve().parents[2]
TWELVE = list(range(1, 13))


def test_a_simulated_folder_refuses_a_real_run_and_says_how_to_go_on(tmp_path: Path) -> None:
    path = seeds_manifest(tmp_path, TWELVE)
    out = tmp_path / "out"
    first = run(path, options(out, fast_sim()))
    assert first.done == 12
    # The real provider, as far as the engine can tell: another host, not simulated.
    real = Simulator(fast_sim().config, api_base_url="https://api.jiekou.ai")
    from batchgen.cli.invocation import Invocation
    from batchgen.cli.render import render_error
    from batchgen.storage.identity import Target

    with pytest.raises(errors.FolderMismatch) as info:
        run(path, options(out, real, simulated=False))
    err = info.value
    assert err.exit_code == 2 and err.done == 12
    assert err.recorded == Target("jiekou", "api.simulator", "z-image-turbo-lora", True)
    assert err.current == Target("jiekou", "api.jiekou.ai", "z-image-turbo-lora", False)
    assert "the simulator" in str(err) and "api.jiekou.ai" in str(err)
    assert real.stats.api_requests == 0  # refused before anything was sent
    text = render_error(err, Invocation(str(path), output=str(out)))
    assert f"--output {out}-jiekou" in text and f"{path} --output {out} --adopt" in text
    # Adopting is explicit, and recorded: the folder's target is now the new one.
    adopted = run(path, options(out, real, simulated=False, adopt=True))
    assert adopted.adopted and adopted.done == 12 and real.stats.submits == 0
    ledger = Ledger.read(out)
    assert ledger.target == err.current and ledger.last_run.adopted == err.recorded


def test_the_cli_refuses_a_simulated_folder_for_a_real_run_with_exit_2(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("JIEKOU_API_KEY", "sk-real-looking-key-0123456789")
    demo, out = str(ROOT / "manifests" / "demo.yaml"), str(tmp_path / "demo")
    assert main(["run", demo, "--simulate", "--output", out, "--quiet", "--sim-task-seconds", "0"]) == 0
    capsys.readouterr()
    # A real run would go to https://api.jiekou.ai; the folder refuses before any request.
    assert main(["run", demo, "--output", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "made against z-image-turbo-lora on the simulator (api.simulator)" in err
    assert f"batchgen run {demo} --output {out} --adopt" in err
    assert "Traceback" not in err


def test_folder_status_counts_against_what_the_last_run_planned(tmp_path: Path, capsys) -> None:
    path = seeds_manifest(tmp_path, TWELVE)
    out = tmp_path / "out"
    sim = fast_sim()
    run(path, options(out, sim, max_jobs=5))
    run(path, options(out, sim, max_jobs=5))
    report = batch_status(out)
    assert (report.planned, report.done, report.failed, report.pending) == (12, 10, 0, 2)
    assert not report.complete and report.eta_seconds is None and report.running is False
    text = render_status(report)
    assert "not complete: 10/12 done" in text and "ETA" not in text
    assert f"`batchgen run {path.resolve()} --output {out.resolve()} --simulate` finishes" in text
    assert main(["status", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [data[k] for k in ("planned", "done", "failed", "pending")] == [12, 10, 0, 2]
    assert all(type(data[k]) is int for k in ("planned", "done", "failed", "pending"))
    assert data["complete"] is False and data["target"]["simulated"] is True
    run(path, options(out, sim))
    done = batch_status(out)
    assert done.complete and (done.done, done.pending) == (12, 0)
    assert "complete: 12/12 done" in render_status(done) and "ETA" not in render_status(done)


def test_folder_status_leaves_out_jobs_the_manifest_no_longer_has(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    run(seeds_manifest(tmp_path, TWELVE, **{'"{index:03d}"': '"s{seed}"'}), options(out, sim))
    path = seeds_manifest(tmp_path, [1, 2, 3, 40, 41], **{'"{index:03d}"': '"s{seed}"'})
    run(path, options(out, sim, max_jobs=1))
    report = batch_status(out)  # the folder alone: 9 old jobs left the manifest
    assert (report.planned, report.done, report.pending, report.vanished) == (5, 4, 1, 9)
    assert not report.complete
    assert (batch_status(path, out).done, batch_status(path, out).vanished) == (4, 9)


def test_a_ledger_from_before_runs_were_recorded_is_never_called_complete(tmp_path: Path) -> None:
    path = seeds_manifest(tmp_path, [1, 2, 3])
    out = tmp_path / "out"
    run(path, options(out, fast_sim()))
    ledger = out / LEDGER_FILE
    lines = [ln for ln in ledger.read_text().splitlines() if '"batchgen_run"' not in ln]
    ledger.write_text("\n".join(lines) + "\n")
    report = batch_status(out)
    assert report.planned_known is False and not report.complete
    assert "planned jobs unknown" in render_status(report)
    # The next run records its target and planned jobs; an old folder is adopted silently.
    run(path, options(out, fast_sim()))
    assert batch_status(out).complete


def test_status_of_a_folder_that_is_no_batch_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty-ledger").mkdir()
    (tmp_path / "empty-ledger" / LEDGER_FILE).write_text("")
    assert main(["status", str(tmp_path / "empty-ledger")]) == 2
    assert "no batch in" in capsys.readouterr().err
    assert main(["status", str(tmp_path)]) == 2
    assert "no batch in" in capsys.readouterr().err


def test_a_folder_with_other_files_and_no_ledger_is_never_written_into(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    sim = fast_sim()
    with pytest.raises(errors.NotABatchFolder, match="is not a batch folder"):
        run(seeds_manifest(tmp_path, [1, 2]), options(out, sim))
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    assert sim.stats.api_requests == 0
    # An empty folder, or one a refused run left with only its lock, is fine.
    (tmp_path / "fresh").mkdir()
    assert run(seeds_manifest(tmp_path, [1, 2]), options(tmp_path / "fresh", sim)).done == 2


def test_images_that_cannot_be_put_in_place_are_found_before_anything_is_paid_for(tmp_path: Path) -> None:
    # images/ on another filesystem: every save's rename would fail after the task was paid.
    here = os.stat(tmp_path).st_dev
    others = [Path(p) for p in ("/dev/shm", "/var/tmp", "/tmp") if os.path.isdir(p) and os.access(p, os.W_OK)
              and os.stat(p).st_dev != here]
    if not others:
        pytest.skip("needs a writable folder on another filesystem than the tests' temporary folder")
    elsewhere = others[0]
    target = elsewhere / f"batchgen-test-{os.getpid()}-{tmp_path.name}"
    target.mkdir()
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / "images").symlink_to(target)
        sim = fast_sim()
        with pytest.raises(OutputError, match="images"):
            run(seeds_manifest(tmp_path, [1, 2]), options(out, sim))
        assert sim.stats.api_requests == 0 and list(target.iterdir()) == []
    finally:
        for p in target.iterdir():
            p.unlink()
        target.rmdir()


def test_a_python_caller_is_refused_the_same_way(tmp_path: Path) -> None:
    path = manifest(tmp_path, 'name: p\nprompt: x\nsize: "256*256"\n')
    out = tmp_path / "out"
    run(path, options(out, fast_sim(), simulated=False))  # a Python caller, sim host
    other = Simulator(fast_sim().config, api_base_url="http://proxy.internal")
    batch = Batch(path, options(out, other, simulated=False))
    with pytest.raises(errors.FolderMismatch, match="host differ"):
        import anyio

        anyio.run(batch.run)


def test_status_gives_an_eta_only_while_a_run_holds_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = seeds_manifest(tmp_path, list(range(1, 25)))
    run(path, options(out, fast_sim(), max_jobs=12))
    idle = batch_status(out)
    assert idle.running is False and idle.eta_seconds is None and idle.rate_per_minute > 0
    from batchgen.storage.identity import RunRecord

    holder = Ledger.open(out, "seeds")  # as a run does: the lock file names this process,
    holder.record_run(RunRecord(at=0.0, mode="run", target=holder.target, planned=24, goal=24))
    try:
        busy = batch_status(out)
        assert busy.running is True and busy.holder.pid == os.getpid()
        assert busy.eta_seconds is not None and busy.eta_seconds > 0
        assert f"running now (pid {os.getpid()})" in render_status(busy) and "ETA" in render_status(busy)
    finally:
        holder.close()
    assert batch_status(out).running is False  # a run that ended empties the lock file


def test_plan_warns_of_an_output_folder_a_run_would_refuse(tmp_path: Path, capsys) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    path = seeds_manifest(tmp_path, [1, 2])
    assert main(["plan", str(path), "--output", str(out)]) == 0
    assert "warning     run would refuse the output folder" in capsys.readouterr().out
    assert main(["plan", str(path), "--output", str(out), "--json"]) == 0
    assert "is not a batch folder" in json.loads(capsys.readouterr().out)["folder_refused"]
