"""Batches in an object store as a run writing to ``s3://`` leaves them, made without it:
a batch run into a local folder with the in-process simulator, then its ``images/``,
``ledger.jsonl`` and ``ledgers/*.jsonl`` uploaded to the bucket at the same relative paths."""

from __future__ import annotations

from pathlib import Path

from batchgen.manifest.shards import Shard
from batchgen.provider.targets import ApiKey
from batchgen.simulator import SimConfig, Simulator
from faultkit import fast_options, manifest_text, run_batch, simulated, write_manifest
from uploadkit import upload_batch  # noqa: F401 - the tests take it from here

KEY = "sk-remote-test-key-0123456789abcdef"  # the run's API key: it must reach no object


def run_into(folder: Path, jobs: int, *, shard: Shard | None = None, max_jobs: int | None = None,
             name: str = "remote", **config) -> Path:
    """Run ``jobs`` small images (or one shard of them) into ``folder/out``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(folder, manifest_text(name, jobs))
    out = folder / "out"
    sim = Simulator(SimConfig(task_seconds=0, task_jitter=0, **config))
    options = fast_options(out, **{**simulated(sim), "api_key": ApiKey(KEY)}, shard=shard,
                           max_jobs=max_jobs)
    run_batch(manifest, options)
    return out
