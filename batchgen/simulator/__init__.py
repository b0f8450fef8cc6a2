"""A faithful simulator of the provider's async image API, for trying, testing, benchmarking.

    sim = Simulator(SimConfig(task_seconds=0))               # in-process: sim.api_transport()
    with running_simulator(SimConfig()) as sim: ...           # real HTTP on loopback ports

It produces real images and real failures on purpose; it never calls out to the network. It
imports nothing of the engine; uvicorn is loaded only when serving (``serve``,
``running_simulator``), so in-process use does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchgen.simulator.app import Simulator
    from batchgen.simulator.config import SimConfig
    from batchgen.simulator.server import running_simulator, serve
    from batchgen.simulator.state import SimStats

__all__ = ["SimConfig", "SimStats", "Simulator", "running_simulator", "serve"]

# Each name loads its module when first asked for: the CLI reads the fault names from
# ``config`` for its help, and that must not load the simulator's HTTP app and images.
_HOMES = {"SimConfig": "config", "SimStats": "state", "Simulator": "app",
          "running_simulator": "server", "serve": "server"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batchgen.simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"batchgen.simulator.{home}"), name)
    globals()[name] = value
    return value
