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
    """Each worker starts on its share of the files with a slow test or a module fixture, then
    takes the short, independent tests.

    pytest-xdist's work stealing first hands each of its n workers one contiguous slice of
    this list (the first ``len // n`` items, then a third of the rest, ...), and later moves
    tests from the end of a busy worker's queue to an idle one. So the files with a slow test
    are dealt out, the most slow tests first, to the slice that has the fewest so far, and
    each slice starts with them: every worker begins on a long test (most wait on processes
    or real time, so they overlap with the short ones' CPU), and none is left ending the run
    alone on one. Files with a module fixture (a browser, a batch built once for its tests)
    come next, whole, where stealing does not split them: a split file builds its fixture
    once per worker."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    by_file: dict[object, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    slow = {path: sum(1 for i in its if i.get_closest_marker("slow")) for path, its in by_file.items()}
    shared = {path for path, its in by_file.items() if any(_module_fixture(i) for i in its)}
    heavy = sorted((p for p in by_file if slow[p] or p in shared), key=lambda p: -slow[p])  # stable
    slices: list[list[pytest.Item]] = [[] for _ in range(workers)]
    weight = [0] * workers
    for path in heavy:
        n = weight.index(min(weight))
        slices[n].extend(by_file[path])
        weight[n] += max(slow[path], 1)
    rest = [item for path, its in by_file.items() if path not in heavy for item in its]
    left = len(items)
    for n in range(workers):  # xdist's first split: what is left over the workers left
        size = max(left // (workers - n), len(slices[n]))
        take = size - len(slices[n])
        slices[n].extend(rest[:take])
        del rest[:take]
        left -= size
    slices[-1].extend(rest)
    items[:] = [item for part in slices for item in part]


def _module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) or {}
    return any(d and d[-1].scope == "module" for d in defs.values())


_made = pytest.StashKey[str]()
_failed = pytest.StashKey[bool]()


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, object]]:
    """asyncio, unless a test asks for virtual time (``@VIRTUAL_TIME``, tests/vclock.py)."""
    from vclock import backend_for

    return backend_for(getattr(request, "param", "asyncio"))
