"""A real single-node Slurm for the tests of this folder: ``slurm_up.sh`` run as root.

Skipped, saying why, when not root or when Debian's slurm-wlm and munge are not installed
(``.ci/run`` installs them). The daemons are stopped by their PIDs when the session ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.slurmkit import Slurm

SLURM_UP = Path(__file__).with_name("slurm_up.sh")
TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    if os.geteuid() != 0:
        pytest.skip("no Slurm: slurm_up.sh starts slurmd, which must run as root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"no Slurm: {', '.join(missing)} not installed "
                    f"(apt-get install slurm-wlm munge; .ci/run does)")
    folder = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(["sh", str(SLURM_UP), "start", str(folder)], capture_output=True,
                                 text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert started.returncode == 0, f"slurm_up.sh failed: {started.stderr}"
        conf = Path(started.stdout.strip().rpartition("SLURM_CONF=")[2])
        yield Slurm(folder, conf)
    finally:
        subprocess.run(["sh", str(SLURM_UP), "stop", str(folder)], capture_output=True, timeout=60)
