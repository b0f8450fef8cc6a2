"""Shared by the benchmarks: the simulator in a process of its own (so the client measured
never shares a GIL with it), scratch folders where batches really write, and CPU clocks."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from batchgen.simulator import SimConfig, SimStats, running_simulator


def _serve(config: SimConfig, conn: Any) -> None:
    with running_simulator(config) as sim:
        conn.send((sim.api_base_url, sim.image_base_url))
        while True:
            message = conn.recv()
            if message == "stats":
                with sim.state.lock:
                    conn.send(sim.stats)
            elif message == "cpu":
                conn.send(cpu_seconds())
            else:
                return


class SimProcess:
    """``with SimProcess(SimConfig(...)) as sim:`` -> ``sim.api_base_url``, ``sim.stats``."""

    def __init__(self, config: SimConfig) -> None:
        context = mp.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_serve, args=(config, child), daemon=True)

    def __enter__(self) -> SimProcess:
        self._proc.start()
        self.api_base_url, self.image_base_url = self._conn.recv()
        return self

    @property
    def stats(self) -> SimStats:
        self._conn.send("stats")
        return self._conn.recv()

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads) the simulator's process has used so far."""
        self._conn.send("cpu")
        return self._conn.recv()

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary batch folder under ./output, on the disk a real batch would use."""
    root = Path("output")
    root.mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="bench-", dir=root)


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all threads), or with
    ``resource.RUSAGE_CHILDREN`` of its children that have ended."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float:
    """User + system CPU seconds another running process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
