"""Shards: --shard I/N, auto and auto/N from Slurm, Kubernetes and AWS Batch, stable membership."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from batchgen.errors import UsageError
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.shards import (
    Shard,
    ShardSource,
    jump_hash,
    parse_shard,
    shard_of,
    tally_shards,
)

SWEEP = """\
name: sweep
prompt: "a {subject} at dusk, {style}"
matrix:
  subject: [fox, owl, hedgehog, badger, heron, otter, lynx, crane]
  style: [oil, watercolor, ink, charcoal, pastel]
  seed: {from: 1, to: 25}
"""


def ids_of(folder: Path, text: str) -> list[str]:
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return [job.job_id for job in load_manifest(path).jobs()]


def refused(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        parse_shard(text, environ or {})
    assert caught.value.exit_code == 2
    return str(caught.value)


# --- --shard I/N --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "index", "count"), [
    ("0/1", 0, 1), ("3/8", 3, 8), (" 7/8 ", 7, 8), ("0/1000", 0, 1000),
])
def test_an_explicit_shard_is_index_over_count_from_zero(text: str, index: int, count: int) -> None:
    shard = parse_shard(text, {"SLURM_ARRAY_TASK_ID": "5"})  # the environment is not asked
    assert (shard.index, shard.count, shard.source) == (index, count, ShardSource.GIVEN)
    assert str(shard) == f"{index}/{count}"


@pytest.mark.parametrize(("text", "says"), [
    ("8/8", "the shards of 8 are 0/8 to 7/8"),
    ("1/0", "at least 1 shard"),
    ("-1/4", "'-1' is not a whole number"),
    ("a/4", "'a' is not a whole number"),
    ("1/", "'' is not a whole number"),
    ("3", "write I/N"),
    ("", "write I/N"),
    ("1.5/4", "not a whole number"),
    ("auto/0", "at least 1 shard"),
    ("auto/x", "'x' is not a whole number"),
])
def test_a_bad_shard_is_a_usage_error_that_says_what_to_write(text: str, says: str) -> None:
    assert says in refused(text)


# --- auto: Slurm --------------------------------------------------------------------------------

def slurm(task: int, low: int, high: int, step: int, count: int) -> dict[str, str]:
    """The variables Slurm 22.05 sets in an array task (read off a real `sbatch --array`)."""
    return {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": str(task),
            "SLURM_ARRAY_TASK_MIN": str(low), "SLURM_ARRAY_TASK_MAX": str(high),
            "SLURM_ARRAY_TASK_STEP": str(step), "SLURM_ARRAY_TASK_COUNT": str(count)}


@pytest.mark.parametrize(("environ", "expected"), [
    (slurm(0, 0, 2, 1, 3), (0, 3)),             # --array=0-2
    (slurm(2, 0, 2, 1, 3), (2, 3)),
    (slurm(1, 1, 4, 1, 4), (0, 4)),             # --array=1-4: MIN is shard 0
    (slurm(4, 1, 4, 1, 4), (3, 4)),
    (slurm(6, 3, 9, 3, 3), (1, 3)),             # --array=3-9:3
    (slurm(4, 0, 4, 2, 3), (2, 3)),             # --array=0-4:2
    (slurm(5, 0, 7, 1, 8), (5, 8)),             # --array=0-7%2: the limit changes nothing
])
def test_auto_normalises_a_slurm_array_to_a_zero_based_index(environ: dict[str, str],
                                                            expected: tuple[int, int]) -> None:
    shard = parse_shard("auto", environ)
    assert (shard.index, shard.count, shard.source) == (*expected, ShardSource.SLURM)


def test_auto_n_must_agree_with_the_slurm_array_size() -> None:
    assert parse_shard("auto/3", slurm(1, 0, 2, 1, 3)) == Shard(1, 3, ShardSource.SLURM)
    says = refused("auto/4", slurm(1, 0, 2, 1, 3))
    assert "Slurm runs 3 copies (SLURM_ARRAY_TASK_COUNT=3), not 4" in says


def test_a_slurm_array_that_is_a_list_is_refused_since_its_ids_number_no_shards() -> None:
    says = refused("auto", slurm(5, 1, 7, 1, 3))   # --array=1,5,7: what Slurm really sets
    assert "not one evenly spaced range" in says and "--array=0-2" in says


def test_a_slurm_task_with_only_its_id_needs_the_count_from_auto_n() -> None:
    old = {"SLURM_ARRAY_TASK_ID": "2"}
    assert parse_shard("auto/4", old) == Shard(2, 4, ShardSource.SLURM)
    assert "write --shard auto/N" in refused("auto", old)
    assert "copy 4 (counting from 0) of only 4" in refused("auto/4", {"SLURM_ARRAY_TASK_ID": "4"})


def test_a_plain_slurm_job_is_told_to_submit_an_array() -> None:
    says = refused("auto", {"SLURM_JOB_ID": "12"})
    assert "not an array" in says and "sbatch --array=0-7" in says


# --- auto: Kubernetes and AWS Batch ---------------------------------------------------------------

def test_kubernetes_gives_the_index_and_auto_n_the_count() -> None:
    pod = {"JOB_COMPLETION_INDEX": "3", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert parse_shard("auto/4", pod) == Shard(3, 4, ShardSource.KUBERNETES)
    says = refused("auto", pod)
    assert "JOB_COMPLETION_INDEX=3" in says and "auto/N" in says and "spec.completions" in says
    assert "of only 3" in refused("auto/3", pod)


def test_a_pod_of_a_job_that_is_not_indexed_is_told_to_index_it() -> None:
    assert "completionMode: Indexed" in refused("auto", {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_aws_batch_gives_index_and_size() -> None:
    child = {"AWS_BATCH_JOB_ID": "abc:3", "AWS_BATCH_JOB_ARRAY_INDEX": "3",
             "AWS_BATCH_JOB_ARRAY_SIZE": "10"}
    assert parse_shard("auto", child) == Shard(3, 10, ShardSource.AWS_BATCH)
    assert parse_shard("auto/10", child) == Shard(3, 10, ShardSource.AWS_BATCH)
    assert "AWS Batch runs 10 copies (AWS_BATCH_JOB_ARRAY_SIZE=10), not 5" in refused("auto/5", child)
    assert "of only 3" in refused("auto", {**child, "AWS_BATCH_JOB_ARRAY_SIZE": "3"})
    assert "arrayProperties" in refused("auto", {"AWS_BATCH_JOB_ID": "abc"})


# --- auto: nothing, garbage, disagreement ---------------------------------------------------------

def test_auto_with_no_job_array_refuses_and_names_what_it_looked_for() -> None:
    says = refused("auto", {"HOME": "/root"})
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"):
        assert name in says
    assert "--shard I/N" in says


def test_auto_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert parse_shard("auto/2") == Shard(1, 2, ShardSource.KUBERNETES)


@pytest.mark.parametrize(("name", "value"), [
    ("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_ID", "-1"), ("SLURM_ARRAY_TASK_COUNT", "3.0"),
    ("JOB_COMPLETION_INDEX", "one"), ("AWS_BATCH_JOB_ARRAY_SIZE", "ten"),
])
def test_a_variable_that_is_not_a_whole_number_is_named(name: str, value: str) -> None:
    environ = {"SLURM_ARRAY_TASK_ID": "0", "JOB_COMPLETION_INDEX": "0",
               "AWS_BATCH_JOB_ARRAY_INDEX": "0", "SLURM_ARRAY_TASK_COUNT": "2",
               "AWS_BATCH_JOB_ARRAY_SIZE": "2", name: value}
    assert f"{name}={value!r} is not a whole number" in refused("auto/2", environ)


def test_two_schedulers_must_name_the_same_shard() -> None:
    both = {**slurm(1, 0, 3, 1, 4), "AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "4"}
    assert parse_shard("auto", both) == Shard(1, 4, ShardSource.SLURM)
    says = refused("auto", {**both, "AWS_BATCH_JOB_ARRAY_INDEX": "2"})
    assert "Slurm says 1/4, AWS Batch says 2/4" in says


# --- membership -----------------------------------------------------------------------------------

def test_jump_hash_matches_the_published_vectors() -> None:
    vectors = [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520)]
    assert [jump_hash(key, buckets) for key, buckets, _ in vectors] == [v[2] for v in vectors]


def test_the_documented_hash_is_pinned() -> None:
    """Changing it would move the jobs of running batches between shards."""
    pinned = {"6d19290291e0a800": [0, 0, 6, 19], "6d19290291e0a800-1": [1, 1, 1, 38],
              "0000000000000000": [1, 1, 1, 28], "ffffffffffffffff": [0, 0, 0, 37]}
    for job_id, shards in pinned.items():
        assert [shard_of(job_id, n) for n in (2, 3, 8, 100)] == shards
        key = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
        assert shard_of(job_id, 8) == jump_hash(key, 8)  # the formula the docs give


def test_every_job_is_in_exactly_one_shard(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(SWEEP)
    manifest = load_manifest(path)
    shards = [Shard(i, 5) for i in range(5)]
    taken = [job.job_id for shard in shards for job in shard.select(manifest.jobs())]
    assert sorted(taken) == sorted(job.job_id for job in manifest.jobs())
    assert len(set(taken)) == len(taken) == 1000


def test_an_edited_manifest_keeps_every_surviving_job_in_its_shard(tmp_path: Path) -> None:
    before = ids_of(tmp_path, SWEEP)
    after = ids_of(tmp_path, SWEEP.replace("hedgehog, ", "").replace("pastel]", "pastel, gouache]"))
    survivors = set(before) & set(after)
    assert len(survivors) == 7 * 5 * 25 and len(after) == 7 * 6 * 25
    assert sum(before.index(i) != after.index(i) for i in survivors) > 500  # positions moved
    for n in (2, 3, 8, 64):
        old = {i: shard_of(i, n) for i in before}
        assert all(shard_of(i, n) == old[i] for i in survivors)


def test_shards_are_balanced_and_replicas_spread(tmp_path: Path) -> None:
    ids = ids_of(tmp_path, SWEEP.replace("name: sweep", "name: sweep\nrepeat: 10"))
    assert len(ids) == 10_000 and sum("-" in i for i in ids) == 9_000
    for n in (2, 8, 64):
        tally = tally_shards(ids, n)
        assert tally.total == 10_000 and len(tally.jobs) == n
        spread = 4 * (10_000 / n) ** 0.5            # four standard deviations of a fair split
        assert max(tally.jobs) - 10_000 / n < spread and 10_000 / n - min(tally.jobs) < spread
    assert tally_shards(ids, 8).imbalance < 1.05
    replicas = [i for i in ids if i.startswith(ids[0].split("-")[0])]
    assert len({shard_of(i, 8) for i in replicas}) > 2  # ten copies of one request spread out


def test_one_more_shard_moves_only_its_share_of_the_jobs(tmp_path: Path) -> None:
    ids = ids_of(tmp_path, SWEEP)
    for n in (1, 4, 8):
        moved = [i for i in ids if shard_of(i, n) != shard_of(i, n + 1)]
        assert all(shard_of(i, n + 1) == n for i in moved)    # only into the new shard
        assert len(moved) < 1.3 * len(ids) / (n + 1)


def test_tally_streams_jobs_or_ids_and_a_single_shard_holds_everything(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(SWEEP)
    manifest = load_manifest(path)
    assert tally_shards(manifest.jobs(), 3) == tally_shards((j.job_id for j in manifest.jobs()), 3)
    assert tally_shards(manifest.jobs(), 1).jobs == (1000,)
    assert tally_shards([], 4).imbalance == 1.0
    assert all(Shard(0, 1).holds(j.job_id) for j in manifest.jobs())
    with pytest.raises(UsageError):
        tally_shards([], 0)
