"""A faithful simulator of the provider's async image API, for trying, testing, benchmarking.

    sim = Simulator(SimConfig(task_seconds=0))               # in-process: sim.api_transport()
    with running_simulator(SimConfig()) as sim: ...           # real HTTP on loopback ports

It produces real images and real failures on purpose; it never calls out to the network. It
imports nothing of the engine; uvicorn is loaded only when serving (``serve``,
``running_simulator``), so in-process use does not pay for it.
"""

from __future__ import annotations

from typing import Any

from batchgen.simulator.app import Simulator
from batchgen.simulator.config import SimConfig
from batchgen.simulator.state import SimStats

__all__ = ["SimConfig", "SimStats", "Simulator", "running_simulator", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("running_simulator", "serve"):
        from batchgen.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module 'batchgen.simulator' has no attribute {name!r}")
