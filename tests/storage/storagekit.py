"""Small helpers for the batch-folder tests: a manifest, an in-process simulator, one run.

Runs go through ``Batch`` with the simulator's transports handed in (the engine's seams), in
virtual time when a test passes a MockClock; nothing of batchgen is replaced.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from trio.testing import MockClock

from batchgen.engine.polling import PollPlanner
from batchgen.engine.runner import Batch, RunOptions, RunSummary
from batchgen.manifest.loader import load_manifest
from batchgen.provider.targets import ApiKey
from batchgen.simulator import SimConfig, Simulator
from vclock import run_virtual

SEEDS = """\
name: seeds
prompt: "a lighthouse, seed {seed}"
size: "256*256"
output_format: png
concurrency: 4
filename: "{index:03d}"
matrix:
  seed: SEEDS
"""

FAST_POLL = dict(cold_first=0.01, min_delay=0.005, backoff_start=0.01)


class VirtualWall:
    """A Clock for several runs on one MockClock: wall time follows the virtual time from one
    fixed epoch, so what one run recorded is in the past for the next (as on a real machine;
    the default LoopClock takes its offset from the real time each run starts at)."""

    EPOCH = 1_750_000_000.0

    def now(self) -> float:
        return anyio.current_time()

    def wall(self) -> float:
        return self.EPOCH + anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def manifest(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def seeds_manifest(folder: Path, seeds: list[int], **replace: str) -> Path:
    text = SEEDS.replace("SEEDS", str(seeds))
    for old, new in replace.items():
        text = text.replace(old, new)
    return manifest(folder, text)


def fast_sim(**config) -> Simulator:
    return Simulator(SimConfig(**{"task_seconds": 0.01, "task_jitter": 0.002, **config}))


def options(out: Path, sim: Simulator, **extra) -> RunOptions:
    extra.setdefault("simulated", True)
    return RunOptions(output=out, api_transport=sim.api_transport(),
                      image_transport=sim.image_transport(), api_key=ApiKey("simulated-key"),
                      base_url=sim.api_base_url, poll=PollPlanner(**FAST_POLL), **extra)


def run(path: Path, opts: RunOptions, mode: str = "run", clock: MockClock | None = None) -> RunSummary:
    batch = Batch(load_manifest(path), opts)
    if clock is not None:
        return run_virtual(getattr(batch, mode), clock=clock)
    return anyio.run(getattr(batch, mode))
