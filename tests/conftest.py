"""Shared test fixtures: async tests run on asyncio through anyio's pytest plugin (tests of
timing choose virtual time instead: see ``vclock``); a real S3 API server on loopback for any
folder that asks for ``s3_server``, ``s3_env`` or ``s3_url`` (see ``cluster/s3server.py``).

Temporary folders live in memory (``/dev/shm``) where the machine has it, unless ``--basetemp``
is given: batchgen fsyncs every file it saves, and on a disk those waits were a large share of
the suite's time without testing anything a test can observe (no test can cut the power)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

from cluster.s3server import s3_env, s3_server, s3_url  # noqa: F401 - fixtures for every test folder

_MEMORY = "/dev/shm"
_PREFIX = "batchgen-tests-"


def pytest_configure(config: pytest.Config) -> None:
    # The suite starts a few hundred Python processes (runs killed and resumed, the CLI, shard
    # runs, Slurm jobs): with PYTHONDONTWRITEBYTECODE set, every one of them compiled batchgen
    # afresh and every worker rewrote every test module, about a quarter of the suite's CPU.
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if config.option.basetemp or hasattr(config, "workerinput"):  # given, or set by the controller
        return
    if os.path.isdir(_MEMORY) and os.access(_MEMORY, os.W_OK):
        _forget_old_runs()
        config.option.basetemp = tempfile.mkdtemp(prefix=_PREFIX, dir=_MEMORY)
        config.stash[_made] = config.option.basetemp


def _forget_old_runs(keep: int = 3) -> None:
    """Failed runs keep their folders to be looked at; like pytest's own, only the newest few
    stay (memory is scarce). A run still going beside this one is among them unless three more
    runs started after it."""
    def made(entry: os.DirEntry[str]) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:  # removed by another run meanwhile
            return 0.0

    old = sorted((p for p in os.scandir(_MEMORY) if p.name.startswith(_PREFIX) and p.is_dir()),
                 key=made, reverse=True)
    for entry in old[keep:]:
        shutil.rmtree(entry.path, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_made, None)
    if made is not None and not config.stash.get(_failed, False):
        shutil.rmtree(made, ignore_errors=True)  # memory is scarce; a failed run's folders are kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_failed] = exitstatus != 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a slow test run first (each file kept whole, so module fixtures start once):
    the workers start the long tests early and the short ones fill in around them, instead of
    one worker ending the run alone on a long test."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within a file kept


_made = pytest.StashKey[str]()
_failed = pytest.StashKey[bool]()


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, object]]:
    """asyncio, unless a test asks for virtual time (``@VIRTUAL_TIME``, tests/vclock.py)."""
    from vclock import backend_for

    return backend_for(getattr(request, "param", "asyncio"))
