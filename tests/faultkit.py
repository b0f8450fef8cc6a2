"""Helpers shared by the reliability tests (soak, crash, disk, hostile, secrets).

``check_folder`` is the one definition of "nothing lost, nothing corrupt" that every test holds
a batch folder to: each final image decodes and matches its sidecar, the ledger and the files
agree, no job has two images, and nothing but the ledger, the lock, ``images/`` and ``.tmp/``
is there (and the live status file a viewer reads).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from PIL import Image
from trio.testing import MockClock

from batchgen.provider.client import ClientOptions
from batchgen.provider.targets import ApiKey
from batchgen.storage.ledger import LEDGER_FILE, LEDGERS_DIR, LOCK_FILE, Ledger
from batchgen.storage.live import STATUS_FILE
from batchgen.manifest.loader import load_manifest
from batchgen.provider.pacing import Backoff
from batchgen.engine.polling import PollPlanner
from batchgen.engine.runner import Batch, RunOptions, RunSummary
from batchgen.simulator import Simulator
from vclock import run_virtual

PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
FAST_BACKOFF = Backoff(base=0.01, factor=2.0, cap=0.05, attempts=6)
FAST_POLL = dict(cold_first=0.01, min_delay=0.005, backoff_start=0.01, max_delay=0.2)


def manifest_text(name: str, jobs: int, *, fmt: str = "png", concurrency: int = 8,
                  extra: str = "") -> str:
    """A manifest of ``jobs`` small images named ``img-<n>``."""
    return (f'name: {name}\nprompt: "{name} image number {{n}}"\nsize: "256*256"\n'
            f"output_format: {fmt}\nconcurrency: {concurrency}\nfilename: \"img-{{n}}\"\n{extra}"
            f"matrix:\n  n: {{from: 1, to: {jobs}}}\n")


def write_manifest(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def fast_options(output: Path, **extra) -> RunOptions:
    """Quiet, quick polling and quick backoff (the 429 pauses stay what the provider says)."""
    extra.setdefault("client", ClientOptions(backoff=FAST_BACKOFF))
    extra.setdefault("poll", PollPlanner(**FAST_POLL))
    return RunOptions(output=output, **extra)


def run_batch(manifest: Path, options: RunOptions, mode: str = "run",
              limit: float = 120.0, clock: MockClock | None = None) -> RunSummary:
    """Run one mode through ``Batch`` with a hang guard of ``limit`` real seconds; with
    ``clock``, in virtual time."""
    batch = Batch(load_manifest(manifest), options)

    async def go() -> RunSummary:
        with anyio.fail_after(limit):
            return await getattr(batch, mode)()

    if clock is None:
        return anyio.run(go)
    return run_virtual(getattr(batch, mode), clock=clock, real_limit=limit)


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120.0, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m batchgen *args`` as a real subprocess; output captured as text."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-m", "batchgen", *args], env=full_env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def cli_here(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``batchgen *args`` in this process, through the CLI's own ``main`` (parsing, rendering,
    exit code), with ``env`` set for the call and the output captured as text: for tests whose
    point is not the process (no signal, no kill, no second process at once), without starting
    an interpreter and importing batchgen again."""
    import contextlib
    import io

    from batchgen.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(["batchgen", *args], code, out.getvalue(), err.getvalue())


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], limit: float = 60.0) -> None:
    """Return once ``ready()`` holds or ``proc`` has ended (checked every 5 ms); AssertionError
    when neither happens within ``limit`` real seconds (a guard against a hang, never a measure)."""
    deadline = time.monotonic() + limit
    while not ready() and proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("the run made no progress")
        time.sleep(0.005)


def wait_running(proc: subprocess.Popen, ready: Callable[[], bool], limit: float = 30.0) -> None:
    """Return once ``ready()`` holds, ``proc`` still running; AssertionError with its output
    when it ends first or ``limit`` real seconds pass (a guard, never a measure)."""
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the run ended or hung first: {proc.communicate(timeout=30)}")
        time.sleep(0.005)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], limit: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (``wait_until``), and reap it; False when
    it had ended first."""
    wait_until(proc, ready, limit)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return killed


class PausedClock:
    """A simulator clock that can stand still: while paused, no task the simulator holds moves on,
    so a test can keep a real run busy for exactly as long as it needs (however slow the machine)."""

    def __init__(self) -> None:
        self._lost = 0.0
        self._paused_at: float | None = None

    def __call__(self) -> float:
        paused_at = self._paused_at
        return (time.monotonic() if paused_at is None else paused_at) - self._lost

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._lost += time.monotonic() - self._paused_at
            self._paused_at = None


@dataclass
class FolderReport:
    """What ``check_folder`` found; it has already asserted the invariants."""

    ledger: Ledger
    images: dict[str, Path] = field(default_factory=dict)  # job_id -> image
    states: dict[str, int] = field(default_factory=dict)


def check_folder(folder: Path, fmt: str = "png") -> FolderReport:
    """Assert every invariant of a batch folder at rest; return what is there."""
    images_dir = folder / "images"
    ledger = Ledger.read(folder)
    assert not (folder / (LEDGER_FILE + ".tmp")).exists(), "a half-done compaction was left behind"
    strays = [p for p in folder.rglob("*") if p.is_file() and _stray(folder, p)]
    assert not strays, f"stray files outside .tmp/: {strays}"

    report = FolderReport(ledger=ledger, states=dict(ledger.counts()))
    seen_jobs: dict[str, Path] = {}
    for image in sorted(images_dir.rglob(f"*.{fmt}")):
        with Image.open(image) as decoded:
            decoded.load()  # a truncated file fails here
            assert decoded.format == PIL_NAMES[fmt], image
        sidecar = image.with_suffix(".json")
        assert sidecar.is_file(), f"{image.name} has no sidecar"
        side = json.loads(sidecar.read_text())
        data = image.read_bytes()
        assert side["image"]["bytes"] == len(data), f"{image.name}: size differs from its sidecar"
        assert side["image"]["sha256"] == hashlib.sha256(data).hexdigest(), image.name
        job_id = side["job_id"]
        assert job_id not in seen_jobs, f"job {job_id} has two images: {seen_jobs[job_id]}, {image}"
        seen_jobs[job_id] = image
        rec = ledger.get(job_id)
        assert rec is not None and rec.state == "done", f"{image.name} belongs to no done record"
        assert rec.file == image.relative_to(folder).as_posix() and rec.size == len(data), image.name
        assert rec.task_id == side["task_id"], f"{image.name}: ledger and sidecar disagree on task"
    for sidecar in images_dir.rglob("*.json"):
        assert sidecar.with_suffix(f".{fmt}").is_file(), f"{sidecar.name} has no image"
    for job_id, rec in ledger.records.items():
        if rec.state == "done":
            assert job_id in seen_jobs, f"done job {job_id} has no image on disk ({rec.file})"
    report.images = seen_jobs
    return report


def _stray(folder: Path, path: Path) -> bool:
    rel = path.relative_to(folder)
    if rel.parts[0] == ".tmp":
        return False
    if rel.as_posix() in (LEDGER_FILE, LOCK_FILE, STATUS_FILE):
        return False
    if rel.parts[0] == LEDGERS_DIR and path.suffix in (".jsonl", ".lock", ".js"):
        return False  # a shard's ledger, lock and live status
    return rel.parts[0] != "images" or path.suffix not in (".png", ".jpeg", ".webp", ".json", ".txt")


def simulated(sim) -> dict:
    """The parts a batch takes from an in-process simulator (or a Rewriter over one): its two
    transports, its base URL and a key it accepts. ``RunOptions(**simulated(sim))``."""
    return dict(api_transport=sim.api_transport(), image_transport=sim.image_transport(),
                base_url=sim.api_base_url, api_key=ApiKey("simulated-key"))


class Rewriter:
    """The simulator's transports, with answers passed through ``rewrite(request, response)``.

    Gives the same three things as the simulator (API base URL, API transport, image
    transport), so ``simulated(Rewriter(sim, rewrite))`` wires it in. ``rewrite`` may be async.
    """

    def __init__(self, sim: Simulator, rewrite: Callable[[httpx.Request, httpx.Response], httpx.Response]):
        self.sim = sim
        self.rewrite = rewrite
        self.api_base_url = sim.api_base_url

    def api_transport(self) -> httpx.AsyncBaseTransport:
        return _Rewriting(self.sim.api_transport(), self.rewrite)

    def image_transport(self) -> httpx.AsyncBaseTransport:
        return _Rewriting(self.sim.image_transport(), self.rewrite)


class _Rewriting(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, rewrite) -> None:
        self.inner = inner
        self.rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        rewritten = self.rewrite(request, response)
        if inspect.isawaitable(rewritten):  # an async rewrite may also take its time
            rewritten = await rewritten
        return rewritten

    async def aclose(self) -> None:
        await self.inner.aclose()


def json_answer(request: httpx.Request, response: httpx.Response,
                change: Callable[[dict], object]) -> httpx.Response:
    data = json.loads(response.content)
    return httpx.Response(response.status_code, json=change(data), request=request)


def on_poll(change: Callable[[dict], object]):
    """Rewrite every 200 task-result answer."""
    def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.endswith("/task-result") and response.status_code == 200:
            return json_answer(request, response, change)
        return response
    return rewrite
