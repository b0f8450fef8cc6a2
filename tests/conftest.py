"""Shared test fixtures: async tests run on asyncio through anyio's pytest plugin (tests of
timing choose virtual time instead: see ``vclock``); a real S3 API server on loopback for any
folder that asks for ``s3_server``, ``s3_env`` or ``s3_url`` (see ``cluster/s3server.py``).

Temporary folders live in memory (``/dev/shm``) where the machine has it, unless ``--basetemp``
is given: batchgen fsyncs every file it saves, and on a disk those waits were a large share of
the suite's time without testing anything a test can observe (no test can cut the power)."""

from __future__ import annotations

import gc
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

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
    """Half the workers start on the tests that wait (on other processes, on the real clock),
    the other half on the long tests that work the CPU; the short, independent tests follow.

    pytest-xdist's work stealing first hands each of its n workers one contiguous slice of
    this list (the first ``len // n`` items, then a third of the rest, ...), and later moves
    tests from the end of a busy worker's queue to an idle one. The suite runs on 2 cores with
    4 workers: while two workers wait, the other two keep both cores busy. So the files with a
    test marked ``waits`` are dealt out, the most such tests first, to the slice of the first
    half that has the fewest so far; the files with a ``slow`` test or a fixture that costs
    (a browser, a batch built once for a module's tests, a server for the session) to the
    second half; each slice starts with them. A file stays whole on one worker, so its module
    fixtures start once, and stealing (from the ends of the queues) leaves it whole; the files
    sharing a server of the suite's own (the S3 server, Slurm) go to the same worker, which
    starts it once, and so do those that load Hugging Face ``datasets``."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    by_file: dict[object, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    groups = _groups_sharing_servers(by_file)

    def marked(name: str) -> dict[tuple[object, ...], int]:
        return {g: sum(1 for p in g for i in by_file[p] if i.get_closest_marker(name)) for g in groups}

    waits, slow = marked("waits"), marked("slow")
    costly = {g for g in groups if any(_costly_fixture(i) for p in g for i in by_file[p])}
    slices: list[list[pytest.Item]] = [[] for _ in range(workers)]
    weight = [0] * workers
    half = max(1, workers // 2)

    def deal(chosen: list[tuple[object, ...]], among: range, size: dict[tuple[object, ...], int]) -> None:
        for group in sorted(chosen, key=lambda g: -size[g]):  # stable
            n = min(among, key=lambda k: weight[k])
            for path in group:
                slices[n].extend(by_file[path])
            weight[n] += max(size[group], 1)

    waiting = [g for g in groups if waits[g]]
    deal(waiting, range(half), waits)
    working = [g for g in groups if not waits[g] and (slow[g] or g in costly)]
    deal(working, range(half, workers) if workers > 1 else range(1), slow)
    dealt = {p for g in waiting + working for p in g}
    rest = [item for path, its in by_file.items() if path not in dealt for item in its]
    left = len(items)
    for n in range(workers):  # xdist's first split: what is left over the workers left
        size = max(left // (workers - n), len(slices[n]))
        take = size - len(slices[n])
        slices[n].extend(rest[:take])
        del rest[:take]
        left -= size
    slices[-1].extend(rest)
    items[:] = [item for part in slices for item in part]


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection loaded (test modules, hypothesis, the package) lives to the end: moved
    out of the garbage collector's sight, every later full collection skips it instead of
    walking a few hundred thousand objects again (it was a tenth of a worker's CPU). The
    same after each test file, for what its tests loaded (datasets, pyarrow, a browser's
    driver): only what is still alive then is kept, and refcounting still frees it.

    Hypothesis is loaded first: on import it asks ``gc.get_referrers`` whether trio's random
    generator is held by anything, which frozen objects never answer."""
    import hypothesis  # noqa: F401

    gc.collect()
    gc.freeze()


@pytest.hookimpl(trylast=True)  # after the file's fixtures were torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is not None and nextitem.path != item.path:
        gc.collect()
        gc.freeze()


def _suite_fixtures(item: pytest.Item) -> list[tuple[str, str]]:
    """(name, scope) of the fixtures of the suite's own (not pytest's or a plugin's) it uses."""
    info = getattr(item, "_fixtureinfo", None)
    found = []
    for name, defs in (getattr(info, "name2fixturedefs", {}) or {}).items():
        code = getattr(getattr(defs[-1], "func", None), "__code__", None) if defs else None
        if code is not None and code.co_filename.startswith(_TESTS):
            found.append((name, defs[-1].scope))
    return found


def _costly_fixture(item: pytest.Item) -> bool:
    return any(scope in ("module", "session") for _, scope in _suite_fixtures(item))


def _groups_sharing_servers(by_file: dict[object, list[pytest.Item]]) -> list[tuple[object, ...]]:
    """The files, in order, grouped where they share a session fixture of the suite's own, or
    load Hugging Face ``datasets``."""
    owner: dict[str, object] = {}
    group_of: dict[object, object] = {path: path for path in by_file}

    def root(path: object) -> object:
        while group_of[path] != path:
            path = group_of[path]
        return path

    for path, its in by_file.items():
        shared = {n for i in its for n, scope in _suite_fixtures(i) if scope == "session"}
        if _LOADS_DATASETS.search(Path(str(path)).read_text(errors="replace")):
            shared.add("the datasets library")  # a second of imports in each worker that loads it
        for name in shared:
            if name in owner:
                group_of[root(path)] = root(owner[name])
            else:
                owner[name] = path
    members: dict[object, list[object]] = {}
    for path in by_file:
        members.setdefault(root(path), []).append(path)
    return [tuple(paths) for paths in members.values()]


_TESTS = os.path.dirname(os.path.abspath(__file__))
_LOADS_DATASETS = re.compile(r"^\s*import datasets\b|\bload_offline\(", re.MULTILINE)


_made = pytest.StashKey[str]()
_failed = pytest.StashKey[bool]()


@pytest.fixture
def ca_bundle_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every CA bundle (or folder) a TLS context loads during the test, in order: the clients
    batchgen makes share one context per process instead of loading the bundle each."""
    import ssl

    loaded: list[tuple] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        loaded.append(args)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return loaded


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, object]]:
    """asyncio, unless a test asks for virtual time (``@VIRTUAL_TIME``, tests/vclock.py)."""
    from vclock import backend_for

    return backend_for(getattr(request, "param", "asyncio"))
