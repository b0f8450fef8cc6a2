"""--shard and --state on the command line: refusals before anything is sent, the tally of
plan --shard, a shard run's summary and hints, status naming the shards of a folder."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from batchgen.cli.main import main

MANIFEST = """\
name: cli-shards
prompt: "a {thing} number {n}"
size: "256*256"
output_format: png
concurrency: 5
matrix:
  thing: [cat, dog, owl]
  n: {from: 1, to: 10}
"""


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX",
                 "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.mark.parametrize(("shard", "says"), [
    ("3/3", "the index counts from 0"), ("auto", "none of"), ("x/2", "--shard"), ("1/0", "at least 1"),
])
def test_a_bad_shard_exits_2_before_anything_exists(manifest: Path, tmp_path: Path, capsys,
                                                    shard: str, says: str) -> None:
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--simulate", "--output", str(out), "--shard", shard]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_state_is_only_for_an_object_store_output(manifest: Path, tmp_path: Path, capsys) -> None:
    code = main(["run", str(manifest), "--simulate", "--output", str(tmp_path / "o"),
                 "--state", str(tmp_path / "s")])
    assert code == 2 and "--state is for an object store output" in capsys.readouterr().err


def test_plan_shows_each_shards_jobs_and_which_is_this_one(manifest: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["plan", str(manifest), "--shard", "auto/4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["shards"]
    assert data["count"] == 4 and sum(data["jobs"]) == 30 and data["this"] is None
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert main(["plan", str(manifest), "--shard", "auto/4"]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.strip().startswith("2/4"))
    assert line.split() == ["2/4", str(data["jobs"][2]), "jobs", "<-", "this", "process", "(Kubernetes)"]


def test_a_shard_run_says_so_and_its_hints_keep_the_shard(manifest: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["run", str(manifest), "--simulate", "--sim-task-seconds", "0", "--output", str(out),
                 "--shard", "1/3", "--quiet", "--max-jobs", "2"])
    text = capsys.readouterr().out
    assert code == 0 and text.startswith("shard 1/3: 2/")
    assert f"`{shlex.join(['batchgen', 'status', str(out)])}` shows the whole batch" in text
    assert main(["status", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["planned"] == 30 and report["done"] == 2 and not report["complete"]
    assert report["ledgers"] == 1 and report["last_run"]["shard"] == "1/3"
