"""What the CLI says and takes: hints that work as printed, a start line, honest progress, help
for a bare `batchgen`, limits as in a manifest, one message per stop, no traceback on `| head`."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.cli.progress import ProgressMode, ProgressReporter
from batchgen.cli.render import render_summary
from batchgen.engine.stats import RunStats
from batchgen.engine.summary import RunSummary
from batchgen.simulator import SimConfig, running_simulator
from faultkit import cli_here

KEY = "sk-cli-words-0123456789abcdef"
REJECTED = """\
name: words
prompt: "a forbidden {thing}"
size: "256*256"
output_format: png
matrix:
  thing: [cat, dog]
"""


def write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def sim_args(out: Path) -> list[str]:
    return ["--simulate", "--output", str(out), "--quiet", "--sim-task-seconds", "0"]


def test_every_hint_keeps_the_options_that_found_the_batch(tmp_path: Path) -> None:
    from batchgen.cli.invocation import Invocation

    how = Invocation("my manifests/demo.yaml", output="out dir/x", base_url="http://127.0.0.1:9/v",
                     simulate=True)
    s = RunSummary(batch="x", folder=Path("out dir/x"), planned=4, done=2, failed=2,
                   retryable_failed=2, pending=0)
    s.failures["TASK_FAILED"] = 2
    text = render_summary(s, how)
    common = "'my manifests/demo.yaml' --output 'out dir/x'"
    assert f"`batchgen status {common}`" in text
    assert f"`batchgen retry {common} --base-url http://127.0.0.1:9/v --simulate`" in text
    s = RunSummary(batch="x", folder=Path("x"), planned=4, done=2, outstanding=2)
    assert f"`batchgen collect {common} --base-url http://127.0.0.1:9/v --simulate`" in render_summary(s, how)


def test_a_printed_hint_works_when_pasted(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, REJECTED, "rejects.yaml")
    assert main(["run", "rejects.yaml", *sim_args(Path("elsewhere"))]) == 1
    out = capsys.readouterr().out
    hints = [part for part in out.split("`") if part.startswith("batchgen ")]
    assert any(f"--output {tmp_path / 'elsewhere'}" in h and "--simulate" in h for h in hints), out
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")  # pasted in another directory: absolute paths
    for hint in hints:
        argv = shlex.split(hint)[1:]
        assert main(argv + (["--quiet"] if argv[0] in ("run", "retry", "collect") else [])) in (0, 1), hint
        capsys.readouterr()
    assert not Path("output").exists()  # no hint read or wrote the default folder instead
    assert not (tmp_path / "output").exists()


def test_a_run_starts_with_a_line_naming_batch_folder_and_work(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, REJECTED.replace("forbidden ", ""))
    out = tmp_path / "out"
    assert main(["run", str(path), "--simulate", "--output", str(out), "--sim-task-seconds", "0",
                 "--max-jobs", "1"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first == (f"batchgen run: batch words, 2 job(s), in {out}, z-image-turbo-lora on the "
                     f"simulator (api.simulator)")
    assert second == "  0 done, 1 to submit (--max-jobs 1), 0 to collect from the provider"


def test_the_first_progress_line_has_a_rate_and_max_jobs_counts_against_this_run() -> None:
    now = [100.0]
    stream = io.StringIO()
    reporter = ProgressReporter(mode=ProgressMode.LINES, stream=stream, now=lambda: now[0])
    reporter.stats = RunStats(planned=10_000, goal=300, already_done=0)
    reporter.rate()  # the run starts
    now[0] += 10
    reporter.stats.done = 50
    line = reporter.line()
    assert line.startswith("50/300 done (of 10000 in the manifest)")
    assert "300/min" in line and "ETA 50s" in line


def test_the_run_counts_its_goal_with_max_jobs(tmp_path: Path) -> None:
    from batchgen.engine.runner import Batch, RunOptions
    from batchgen.provider.targets import ApiKey
    from batchgen.simulator import Simulator

    class Watch:
        stats = None

        def notice(self, notice) -> None:
            pass

        async def watch(self, stats) -> None:
            import anyio

            self.stats = stats
            await anyio.sleep_forever()

    import anyio

    sim = Simulator(SimConfig(task_seconds=0))
    watch = Watch()
    path = write(tmp_path, REJECTED.replace("forbidden ", "").replace("[cat, dog]", "[a, b, c, d, e, f]"))
    opts = RunOptions(output=tmp_path / "out", max_jobs=2, reporter=watch, api_transport=sim.api_transport(),
                      image_transport=sim.image_transport(), api_key=ApiKey("k"), base_url=sim.api_base_url)
    summary = anyio.run(Batch(path, opts).run)
    assert (watch.stats.planned, watch.stats.goal, summary.goal) == (6, 2, 2)


def test_a_bare_batchgen_prints_help(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: batchgen") and "run" in out and "status" in out


@pytest.mark.parametrize(("argv", "code"), [
    (["run", "m.yaml", "--concurrency", "5000"], 2),
    (["plan", "m.yaml", "--task-seconds", "-1"], 2),
    (["plan", "m.yaml", "--task-seconds", "0"], 2),
])
def test_limits_are_the_manifests(argv: list[str], code: int, capsys) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "usage:" in err and ("at most 1000" in err or "more than 0" in err)


def test_concurrency_1000_is_accepted_as_in_a_manifest(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, REJECTED.replace("forbidden ", ""))
    assert main(["run", str(path), *sim_args(tmp_path / "out"), "--concurrency", "1000"]) == 0


def test_collect_offers_no_rpm_and_retry_takes_max_jobs(capsys) -> None:
    assert main(["collect", "--help"]) == 0
    assert "--rpm" not in capsys.readouterr().out
    assert main(["retry", "--help"]) == 0
    assert "--max-jobs" in capsys.readouterr().out


def test_an_empty_key_is_called_empty_not_missing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("JIEKOU_API_KEY", "  ")
    path = write(tmp_path, REJECTED)
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "JIEKOU_API_KEY is set but empty" in capsys.readouterr().err
    assert main(["plan", str(path)]) == 0
    assert "$JIEKOU_API_KEY (set but empty" in capsys.readouterr().out


def test_a_stop_is_said_once_and_a_404_names_the_base_url_it_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, REJECTED.replace("forbidden ", ""))
    with running_simulator(SimConfig(api_key=KEY, task_seconds=0)) as sim:
        base = ["run", str(path), "--quiet"]
        refused = cli_here(*base, "--base-url", sim.api_base_url, "--output", str(tmp_path / "a"),
                           env={"JIEKOU_API_KEY": "wrong-key-123"})
        lost = cli_here(*base, "--base-url", sim.api_base_url + "/nope", "--output", str(tmp_path / "b"),
                        env={"JIEKOU_API_KEY": KEY})
    both = refused.stdout + refused.stderr
    assert refused.returncode == 3 and both.count("refused the API key") == 1, both
    both = lost.stdout + lost.stderr
    assert lost.returncode == 3 and both.count("has no such endpoint") == 1, both
    assert f"(the base URL was given with --base-url {sim.api_base_url}/nope)" in both


def test_status_into_a_closed_pipe_leaves_quietly(tmp_path: Path) -> None:
    path = write(tmp_path, REJECTED.replace("forbidden ", ""))
    out = tmp_path / "out"
    assert main(["run", str(path), *sim_args(out)]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already exited
    try:
        proc = subprocess.run([sys.executable, "-m", "batchgen", "status", str(out), "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr and "Error" not in proc.stderr


def test_ctrl_c_during_the_check_of_a_big_manifest_stops_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'name: big\nprompt: "a {n}"\nsize: "256*256"\nmatrix:\n'
                           '  n: {from: 1, to: 400000}\n')
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "batchgen", "run", str(path), "--simulate",
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()  # said before the check starts, so no blank screen
        assert line.startswith(f"checking {path}: 400,000 jobs"), line
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not out.exists()  # the check never finished: nothing was created, nothing sent
    assert took < 3.0, f"Ctrl-C took {took:.1f}s"


def test_status_json_is_machine_readable_with_integer_counts(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, REJECTED)
    out = tmp_path / "out"
    assert main(["run", str(path), *sim_args(out)]) == 1
    capsys.readouterr()
    assert main(["status", str(path), "--output", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["planned"], data["done"], data["failed"], data["pending"]) == (2, 0, 2, 0)
