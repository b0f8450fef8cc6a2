"""A small LoRA sweep run on the in-process simulator in virtual time, for the view tests.

Three subjects x two styles x five LoRA settings, scales written out of order; every job of the
subject "forbidden fruit" is refused by the provider (ILLEGAL_PROMPT), and one cell is excluded,
so a sheet has images, failures and an empty place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio
from trio.testing import MockClock

from batchgen.engine.runner import Batch
from batchgen.manifest import load_manifest
from batchgen.simulator import SimConfig, Simulator
from faultkit import fast_options, simulated, write_manifest
from vclock import run_virtual

SWEEP = """\
name: sweep
prompt: "a {subject}, {style}"
size: "256*256"
output_format: png
filename: "{subject}/{style}/{loras}"
matrix:
  subject: [fox, owl, forbidden fruit]
  style: [oil, ink]
  loras:
    - []
    - [{path: "https://example.com/loras/ghibli.safetensors", scale: [1.5, 0.25, 1, 0.5]}]
exclude:
  - {subject: owl, style: ink, loras: none}
"""
LORAS = ["none", "ghibli@1.5", "ghibli@0.25", "ghibli@1", "ghibli@0.5"]  # as written


@dataclass
class SweepBatch:
    manifest: Path
    folder: Path


def run_sweep(tmp_path: Path, text: str = SWEEP) -> SweepBatch:
    manifest = write_manifest(tmp_path, text.replace("name: sweep", f"name: sweep\noutput: {tmp_path / 'out'}"))
    sim = Simulator(SimConfig(task_seconds=2, task_jitter=0.5), clock=anyio.current_time)
    batch = Batch(load_manifest(manifest), fast_options(tmp_path / "out", **simulated(sim)))
    # No virtual-time deadline around the run: when a run ends while the ledger's fsync is in
    # its worker thread, the mock clock would jump straight to such a deadline and fail a run
    # that was only waiting for the disk.
    run_virtual(batch.run, clock=MockClock(autojump_threshold=0))
    return SweepBatch(manifest, tmp_path / "out")
