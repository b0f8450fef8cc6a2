"""A faithful simulator of the provider's API (reference/API.md), for trying, testing, benchmarking.

    sim = Simulator(SimConfig(task_seconds=0))               # in-process: sim.api_transport()
    with running_simulator(SimConfig()) as sim: ...           # real HTTP on loopback ports

It produces real images and real failures on purpose; it never calls out to the network.
"""

from batchgen.simulator.app import Simulator
from batchgen.simulator.config import SimConfig
from batchgen.simulator.server import running_simulator, serve
from batchgen.simulator.state import SimStats

__all__ = ["SimConfig", "SimStats", "Simulator", "running_simulator", "serve"]
