"""What a done record promises: files on disk before the ledger says done, a sidecar that is
whole (repaired on resume when not), one clock in the sidecar, the path the ledger has, and a
word when the image is not the size that was asked for."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
from trio.testing import MockClock

from batchgen.cli.render import render_status, render_summary
from batchgen.job import Job
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.folder import BatchFolder
from batchgen.storage.ledger import LEDGER_FILE, Ledger
from batchgen.storage.sidecar import Sidecar
from batchgen.storage.status import batch_status
from batchgen.storage.writer import SavedFiles
from faultkit import check_folder
from storagekit import fast_sim, options, run, seeds_manifest


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LEDGER_FILE).read_text().splitlines() if line]


def test_a_cut_sidecar_is_fetched_again_from_its_task(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    path = seeds_manifest(tmp_path, [1, 2, 3])
    run(path, options(out, sim))
    sidecar = out / "images" / "001.json"
    whole = sidecar.read_bytes()
    sidecar.write_bytes(whole[: len(whole) // 2])  # a power cut or a cut copy
    again = run(path, options(out, sim))
    assert (again.redownloaded, again.submitted, again.done) == (1, 0, 3)
    assert Sidecar.decode(sidecar.read_bytes()).job_id == json.loads(whole)["job_id"]
    assert sim.stats.tasks_created == 3
    check_folder(out)


def test_without_a_recorded_sidecar_size_the_sidecar_must_parse(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    path = seeds_manifest(tmp_path, [1, 2])
    run(path, options(out, sim))
    ledger = out / LEDGER_FILE
    old = [{k: v for k, v in e.items() if k != "sidecar_bytes"} for e in events(out)]
    ledger.write_text("".join(json.dumps(e) + "\n" for e in old))  # as an older batchgen wrote it
    sidecar = out / "images" / "000.json"
    sidecar.write_bytes(b"x" * len(sidecar.read_bytes()))  # same size, not JSON
    again = run(path, options(out, sim))
    assert (again.redownloaded, again.submitted) == (1, 0)
    check_folder(out)


class RecordingFolder(BatchFolder):
    """The local folder, noting at each sync whether the ledger already called any of the
    unsynced jobs done (it must not)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.unsynced: list[str] = []
        self.early: list[str] = []
        self.syncs = 0

    def save(self, job: Job, data: bytes, sidecar: Sidecar) -> SavedFiles:
        saved = super().save(job, data, sidecar)
        self.unsynced.append(job.job_id)
        return saved

    def sync(self) -> None:
        done = {e["job"] for e in events(self.root) if e.get("state") == "done"}
        self.early += [j for j in self.unsynced if j in done]
        self.unsynced = []
        self.syncs += 1
        super().sync()


def test_files_are_synced_before_the_ledger_records_them_done_in_groups(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = RecordingFolder(out)
    path = seeds_manifest(tmp_path, list(range(1, 41)), **{"concurrency: 4": "concurrency: 16"})
    summary = run(path, options(out, fast_sim(task_seconds=0.02), writer=folder))
    assert summary.done == 40 and folder.early == [] and folder.unsynced == []
    assert 1 <= folder.syncs < 40  # group-committed: fewer syncs than jobs
    check_folder(out)


def test_a_sidecar_keeps_one_clock_and_the_path_the_ledger_records(tmp_path: Path) -> None:
    # The simulator's own clock is virtual (its timestamps are near 1970): none of them may
    # reach the sidecar, whose times are all on the run's clock and in order.
    out = tmp_path / "out"
    clock = MockClock(autojump_threshold=0)
    sim = Simulator(SimConfig(task_seconds=5, task_jitter=1), clock=anyio.current_time)
    run(seeds_manifest(tmp_path, [1, 2, 3, 4]), options(out, sim), clock=clock)
    ledger = Ledger.read(out)
    for job_id, rec in ledger.records.items():
        side = json.loads((out / rec.file).with_suffix(".json").read_text())
        assert side["image"]["file"] == rec.file
        t = side["timings"]
        times = [t["submitted"], t["started"], t["finished"], t["downloaded"]]
        present = [x for x in times if x is not None]
        assert present == sorted(present) and t["submitted"] and t["finished"], t
        assert not t["started"] or t["started"] >= t["submitted"]
        assert side["image"]["requested"] == "256*256" and side["warnings"] == []


class WrongSize(httpx.AsyncBaseTransport):
    """The API as a provider that mixes up one request's size (the bug batchgen must notice)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, prompt_part: str) -> None:
        self.inner = inner
        self.prompt_part = prompt_part

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            if self.prompt_part in body["prompt"]:
                body["size"] = "320*320"
                request = httpx.Request("POST", request.url, headers={
                    k: v for k, v in request.headers.items() if k.lower() != "content-length"},
                    content=json.dumps(body).encode())
        return await self.inner.handle_async_request(request)


def test_an_image_of_another_size_than_asked_is_kept_and_flagged_everywhere(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sim = fast_sim()
    path = seeds_manifest(tmp_path, [1, 2, 3])
    opts = options(out, sim)
    opts.api_transport = WrongSize(sim.api_transport(), "seed 2")
    summary = run(path, opts)
    assert summary.done == 3 and summary.size_mismatched == 1
    assert "images/001.png: asked 256*256, got 320*320" in summary.size_example
    assert "1 image(s) are not the size the request asked for" in render_summary(summary, path)
    side = json.loads((out / "images" / "001.json").read_text())
    assert (side["image"]["width"], side["image"]["requested"]) == (320, "256*256")
    assert side["warnings"] == ["the provider returned an image of 320*320, not the 256*256 the "
                                "request asked for"]
    report = batch_status(out)
    assert report.size_mismatched == 1 and "not the size the request asked for" in render_status(report)
    assert report.to_json()["size_mismatched"] == 1
    # Compaction keeps the record of it.
    ledger = Ledger.open(out, "seeds")
    ledger.compact()
    ledger.close()
    assert batch_status(out).size_mismatched == 1
