"""What the ``slurm`` fixture (``tests/cluster/conftest.py``) hands a test."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Slurm:
    """A running cluster: its folder (state, logs) and the environment its clients need."""

    folder: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}
