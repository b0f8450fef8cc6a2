"""Builds a scheduler and a collector by hand over an in-process simulator, in virtual time.

What the runner would assemble, given here part by part (transports, key, clock, writer), so
the scheduler's and the collector's own tests reach them without a manifest or a CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from batchgen.engine.clock import LoopClock
from batchgen.engine.collector import Collector
from batchgen.engine.downloads import DownloadTurns
from batchgen.engine.polling import PollPlanner
from batchgen.engine.scheduler import Scheduler
from batchgen.engine.stats import RunStats
from batchgen.job import Job
from batchgen.provider.client import ClientOptions, ProviderClient, submits_for
from batchgen.provider.limits import Limits
from batchgen.provider.targets import ApiKey, resolve_target
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.folder import BatchFolder
from batchgen.storage.ledger import Ledger

MODEL = "z-image-turbo-lora"


def jobs(count: int, fmt: str = "png") -> list[Job]:
    return [Job(job_id=f"{n:016x}", index=n, request={"prompt": f"job {n}", "seed": n, "size": "256*256",
                                                       "output_format": fmt},
                axes={"n": n}, replica=0, name=f"img-{n}") for n in range(count)]


@dataclass
class Rig:
    sim: Simulator
    ledger: Ledger
    folder: BatchFolder
    stats: RunStats
    client: ProviderClient
    collector: Collector
    scheduler: Scheduler
    limits: Limits


@asynccontextmanager
async def rig(tmp_path: Path, config: SimConfig, *, concurrency: int = 8, task_timeout: float = 1800.0,
              max_submits: int | None = None, rpm: float | None = None,
              options: ClientOptions | None = None, renew: bool = False) -> AsyncIterator[Rig]:
    """Every part of a run, wired by hand; the simulator shares the loop's (virtual) clock."""
    sim = Simulator(config, clock=anyio.current_time)
    clock = LoopClock()
    ledger = Ledger.open(tmp_path / "out", "b", wall=clock.wall)
    folder = BatchFolder(tmp_path / "out")
    folder.prepare()
    stats = RunStats()
    target = resolve_target("jiekou", sim.api_base_url, "JIEKOU_API_KEY", network=False)  # in-process
    limits = Limits(concurrency, rpm, now=clock.now,
                    parallel=(options or ClientOptions()).parallel_submits or submits_for(concurrency))
    stats.pace = limits
    downloads = DownloadTurns(max(4, min(64, concurrency)))
    client = ProviderClient(target, ApiKey("k"), options=options or ClientOptions(
                                image_connections=downloads.slots), limits=limits,
                            transport=sim.api_transport(), image_transport=sim.image_transport(),
                            sleep=clock.sleep, now=clock.now)
    collector = Collector(client, ledger, folder, PollPlanner(), stats, clock, model=MODEL, batch="b",
                          task_timeout=task_timeout, downloads=downloads)
    scheduler = Scheduler(client, ledger, collector, stats, limits=limits, model=MODEL,
                          concurrency=concurrency, max_submits=max_submits, renew=renew)
    try:
        async with client:
            yield Rig(sim, ledger, folder, stats, client, collector, scheduler, limits)
    finally:
        ledger.close()
