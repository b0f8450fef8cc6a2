"""Hostile provider answers, through ``Batch.run``: each ends as a clear per-job failure (reason in
the ledger and in ``batchgen status``) or a bounded wait; never a hang, never a crashed batch.

Most cases are simulator faults at rate 1.0. What the simulator cannot say (an unparsable image
URL, absurd numbers, a poll answer that is not an object) is said by ``Rewriter``: the
simulator's own transport with one answer rewritten, handed to the runner through the same
seam as the simulator (no batchgen code is replaced).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import httpx
from trio.testing import MockClock
import pytest

from batchgen.cli.exitcodes import exit_code
from batchgen.cli.render import render_status, render_summary
from batchgen.provider.client import ClientOptions
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.ledger import Ledger
from batchgen.storage.status import batch_status
from faultkit import (simulated, FAST_BACKOFF, Rewriter, check_folder, fast_options, json_answer, manifest_text,
                      on_poll, run_batch, write_manifest)

JOBS = 3
GUARD = 30.0  # seconds: every case here ends well within it, or it is a hang
QUICK_TIMEOUT = "task_timeout: 0.4\n"


def sim_with(**config) -> Simulator:
    return Simulator(SimConfig(**{"task_seconds": 0.01, "task_jitter": 0.0, **config}))


def run_hostile(tmp_path: Path, sim, *, extra: str = "", fmt: str = "png", clock=None, **options):
    """One run against a rewritten simulator; with ``clock`` (a MockClock) in virtual time."""
    path = write_manifest(tmp_path, manifest_text("hostile", JOBS, fmt=fmt, concurrency=3, extra=extra))
    summary = run_batch(path, fast_options(tmp_path / "out", **simulated(sim), **options), limit=GUARD,
                        clock=clock)
    return path, summary


def failed_with(tmp_path: Path, summary, reason: str, text: str) -> None:
    """Every job failed with ``reason``; the ledger and ``batchgen status`` both say ``text``."""
    assert summary.failed == JOBS and summary.failures == {reason: JOBS}, summary.failures
    assert exit_code(summary) == 1 and summary.stopped is None
    report = batch_status(tmp_path / "out")
    assert report.counts["failed"] == JOBS
    assert [f["reason"] for f in report.failures] == [reason]
    assert text in report.failures[0]["example"], report.failures[0]["example"]
    assert text in render_status(report)
    check_folder(tmp_path / "out")


# -- answers that are not what they claim -----------------------------------------------------

def test_submit_answers_that_are_not_json_fail_each_job_clearly(tmp_path: Path) -> None:
    sim = sim_with(fault_not_json=1.0)
    _, summary = run_hostile(tmp_path, sim)
    failed_with(tmp_path, summary, "SUBMIT_FAILED", "answer was not JSON (text/html)")
    assert sim.stats.tasks_created == 0
    assert summary.retryable_failed == JOBS


def test_a_garbled_submit_answer_fails_its_job_once_and_retry_finishes_it(tmp_path: Path) -> None:
    # A garbled 200 to a submit may stand for a task the provider made: that job fails at once
    # (never a second paid try); garbled polls are simply asked again.
    sim = sim_with(fault_not_json=0.3, fault_seed=4)
    path, summary = run_hostile(tmp_path, sim)
    garbled = sim.stats.submits_by_outcome["not_json"]
    assert garbled > 0
    assert summary.failed == garbled and summary.failures["SUBMIT_FAILED"] == garbled
    assert summary.done == JOBS - garbled and sim.stats.submits == JOBS
    sim.config.fault_not_json = 0.0
    retried = run_batch(path, fast_options(tmp_path / "out", **simulated(sim)), mode="retry", limit=GUARD)
    assert retried.done == JOBS


def test_poll_answers_that_are_not_json_end_in_a_bounded_timeout(tmp_path: Path) -> None:
    def html(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.endswith("/task-result"):
            return httpx.Response(200, content=b"<html>oops</html>", headers={"content-type": "text/html"})
        return response
    # In virtual time at the default task_timeout: the bounded wait is 30 minutes of retries.
    sim = Simulator(SimConfig(task_seconds=0.01, task_jitter=0.0), clock=anyio.current_time)
    _, summary = run_hostile(tmp_path, Rewriter(sim, html), clock=MockClock(autojump_threshold=0))
    failed_with(tmp_path, summary, "TIMEOUT", "poll failing (the provider's task-result answer was not JSON")
    assert sim.stats.tasks_created == JOBS


def test_a_200_without_task_id_fails_the_job_and_says_a_task_may_be_paid(tmp_path: Path) -> None:
    sim = sim_with(fault_no_task_id=1.0)
    path, summary = run_hostile(tmp_path, sim)
    failed_with(tmp_path, summary, "SUBMIT_FAILED", "sent no task_id")
    assert "a task may have been created at the provider without its id" in \
        batch_status(tmp_path / "out").failures[0]["example"]
    # The provider answered 200, so it handled the submit: batchgen does not pay again, and
    # the one task each job may have cost is counted and reported.
    assert sim.stats.tasks_created == sim.stats.tasks_created_but_dropped == JOBS
    assert summary.maybe_duplicated == sim.stats.tasks_created
    assert batch_status(tmp_path / "out").maybe_duplicated == sim.stats.tasks_created
    assert "may have created (and billed) a task we hold no id for" in render_summary(summary, path)


def test_a_task_id_that_is_not_a_string_is_no_task_id(tmp_path: Path) -> None:
    def numeric(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "POST" and response.status_code == 200:
            return json_answer(request, response, lambda data: {"task_id": 12345})
        return response
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, numeric))
    failed_with(tmp_path, summary, "SUBMIT_FAILED", "sent no task_id")


@pytest.mark.parametrize("answer", [
    pytest.param(lambda data: [data], id="array"),
    pytest.param(lambda data: {**data, "task": "succeeded"}, id="task-not-object"),
    pytest.param(lambda data: {**data, "task": {**data["task"], "status": 7}}, id="status-number"),
])
def test_poll_answers_of_the_wrong_shape_wait_boundedly(tmp_path: Path, answer) -> None:
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(answer)), extra=QUICK_TIMEOUT)
    failed_with(tmp_path, summary, "TIMEOUT", "its task id is kept")


@pytest.mark.parametrize("field", ["seed", "eta"])
def test_absurd_numbers_in_a_task_result_do_not_crash_the_batch(tmp_path: Path, field: str) -> None:
    huge = 10 ** 400  # json.dumps writes it as a 401-digit integer; float() cannot hold it

    def change(data: dict) -> dict:
        if field == "seed":
            data["extra"]["seed"] = huge
        else:
            data["task"]["eta"] = huge
        return data
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(change)), extra=QUICK_TIMEOUT)
    assert summary.done == JOBS  # an absurd hint or seed is "unknown", not a reason to fail
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "out" / "images").rglob("*.json")]
    assert len(sidecars) == JOBS and all(side["seed"] is None for side in sidecars) == (field == "seed")
    check_folder(tmp_path / "out")


# -- images that are not images ---------------------------------------------------------------

def test_an_endless_image_body_is_cut_at_the_size_limit(tmp_path: Path) -> None:
    sim = sim_with(fault_huge_image=1.0, huge_image_bytes=1 << 40)  # a terabyte: endless
    _, summary = run_hostile(tmp_path, sim, client=ClientOptions(backoff=FAST_BACKOFF,
                                                                 max_image_bytes=4 << 20))
    failed_with(tmp_path, summary, "BAD_IMAGE", f"over the {4 << 20} byte limit")
    assert sim.stats.downloads_by_outcome["huge"] == JOBS  # fetched once: again would cost the same


class _Trickle(httpx.AsyncByteStream):
    """A body that never ends and never grows big: one byte every 20 ms, forever."""

    async def __aiter__(self):
        while True:
            yield b"\x89"
            await anyio.sleep(0.02)


def test_an_image_body_that_trickles_forever_is_cut_by_the_download_deadline(tmp_path: Path) -> None:
    def trickle(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.startswith("/img/"):
            return httpx.Response(200, headers={"content-type": "image/png"}, stream=_Trickle(),
                                  request=request)
        return response
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, trickle), client=ClientOptions(
        backoff=FAST_BACKOFF, download_deadline=0.2, download_attempts=1))
    failed_with(tmp_path, summary, "DOWNLOAD_FAILED", "took longer than")


def test_a_huge_image_at_the_default_limit_fails_the_job(tmp_path: Path) -> None:
    sim = sim_with(fault_huge_image=1.0)  # 1 GiB bodies against the default 64 MiB cap
    _, summary = run_hostile(tmp_path, sim)
    failed_with(tmp_path, summary, "BAD_IMAGE", "over the 67108864 byte limit")


def test_a_redirect_to_another_host_is_followed_without_the_key(tmp_path: Path) -> None:
    sim = sim_with(fault_redirect=1.0)
    _, summary = run_hostile(tmp_path, sim)
    assert summary.done == JOBS and sim.stats.downloads_by_outcome["redirect"] == JOBS
    assert sim.stats.image_requests_with_auth == 0 and sim.stats.key_leaks == 0
    check_folder(tmp_path / "out")


@pytest.mark.parametrize(("location", "text"), [
    ("http://images.simulator/img/loop.png", "redirects in circles"),
    ("http://[::1", "Invalid port"),
])
def test_redirects_that_lead_nowhere_fail_the_job(tmp_path: Path, location: str, text: str) -> None:
    def redirect(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.startswith("/img/"):
            return httpx.Response(302, headers={"location": location}, request=request)
        return response
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, redirect))
    failed_with(tmp_path, summary, "DOWNLOAD_FAILED", text)


def test_an_image_url_that_cannot_be_parsed_fails_the_job(tmp_path: Path) -> None:
    def broken_url(data: dict) -> dict:
        if data["images"]:
            data["images"][0]["image_url"] = "http://[::1/img.png"
        return data
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(broken_url)))
    failed_with(tmp_path, summary, "DOWNLOAD_FAILED", "Invalid port")


def test_a_base64_field_that_is_not_base64_fails_the_job(tmp_path: Path) -> None:
    sim = sim_with(fault_bad_base64=1.0)
    _, summary = run_hostile(tmp_path, sim, extra="enable_base64_output: true\n")
    failed_with(tmp_path, summary, "BAD_IMAGE", "not valid base64")
    assert sim.stats.image_requests == 0


def test_a_succeeded_task_without_images_fails_the_job(tmp_path: Path) -> None:
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(lambda data: {**data, "images": []})))
    failed_with(tmp_path, summary, "NO_IMAGE", "returned no image")


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_bytes_that_do_not_decode_as_the_format_fail_the_job(tmp_path: Path, fmt: str) -> None:
    sim = sim_with(fault_bad_image=1.0)
    _, summary = run_hostile(tmp_path, sim, fmt=fmt)
    failed_with(tmp_path, summary, "BAD_IMAGE", "")
    report = batch_status(tmp_path / "out")
    assert "not a complete" in report.failures[0]["example"] or "expected a" in report.failures[0]["example"]


def test_a_truncated_download_every_time_fails_the_job(tmp_path: Path) -> None:
    sim = sim_with(fault_truncate=1.0)
    _, summary = run_hostile(tmp_path, sim)
    assert summary.failed == JOBS and set(summary.failures) <= {"BAD_IMAGE", "DOWNLOAD_FAILED"}
    assert not [p for p in (tmp_path / "out" / "images").rglob("*") if p.is_file()]


def test_an_expired_url_every_time_fails_the_job_as_expired_after_task_timeout(tmp_path: Path) -> None:
    # Renewed for as long as the task may be there (task_timeout after it finished), with
    # growing pauses between renewals: a handful of polls, not a fixed two, and not a storm.
    sim = sim_with(fault_expire=1.0)
    _, summary = run_hostile(tmp_path, sim, extra="task_timeout: 2\n")
    failed_with(tmp_path, summary, "EXPIRED", "asking for the result again did not help")
    assert 3 * JOBS <= sim.stats.downloads_by_outcome["expired"] <= 12 * JOBS


# -- tasks that never finish ------------------------------------------------------------------

def test_a_task_stuck_in_queue_times_out_and_keeps_its_task_id(tmp_path: Path) -> None:
    sim = sim_with(fault_stuck=1.0)
    _, summary = run_hostile(tmp_path, sim, extra=QUICK_TIMEOUT)
    failed_with(tmp_path, summary, "TIMEOUT", "still 'TASK_STATUS_QUEUED' after 0.4s")
    report = batch_status(tmp_path / "out")
    assert report.failures[0]["retryable"] and sim.stats.tasks_created == JOBS


def test_an_unknown_status_is_not_finished_and_the_task_completes(tmp_path: Path) -> None:
    sim = sim_with(fault_unknown_status=1.0, task_seconds=0.1)
    _, summary = run_hostile(tmp_path, sim)
    assert summary.done == JOBS and sim.stats.faults["fault_unknown_status"] > 0
    check_folder(tmp_path / "out")


def test_an_unknown_status_forever_ends_in_a_bounded_timeout(tmp_path: Path) -> None:
    sim = sim_with(fault_unknown_status=1.0, fault_stuck=1.0)
    _, summary = run_hostile(tmp_path, sim, extra=QUICK_TIMEOUT)
    failed_with(tmp_path, summary, "TIMEOUT", "still 'TASK_STATUS_UNKNOWN'")


def test_a_canceled_status_forever_ends_in_a_bounded_timeout(tmp_path: Path) -> None:
    def canceled(data: dict) -> dict:
        data["task"]["status"] = "TASK_STATUS_CANCELED"
        data["images"] = []
        return data
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(canceled)), extra=QUICK_TIMEOUT)
    failed_with(tmp_path, summary, "TIMEOUT", "still 'TASK_STATUS_CANCELED'")


def test_deeply_nested_json_answers_fail_the_job_or_wait_boundedly(tmp_path: Path) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError, not ValueError

    def deep(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "POST" and b"number 1\"" in request.content:
            return httpx.Response(200, content=nested, request=request)
        if request.url.path.endswith("/task-result") and response.status_code == 200:
            return httpx.Response(200, content=nested, request=request)
        return response
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, deep), extra=QUICK_TIMEOUT)
    assert summary.failed == JOBS and summary.stopped is None
    assert summary.failures["SUBMIT_FAILED"] >= 1 and summary.failures["TIMEOUT"] >= 1
    text = render_status(batch_status(tmp_path / "out"))
    assert "answer was not JSON" in text
    check_folder(tmp_path / "out")


# -- bounded by design, bad data is data (issue: hostile input) --------------------------------

@pytest.mark.parametrize("seed", [2 ** 80, str(2 ** 80)], ids=["number", "string"])
def test_a_seed_out_of_range_is_recorded_as_unknown_with_a_warning(tmp_path: Path, seed) -> None:
    def change(data: dict) -> dict:
        data["extra"]["seed"] = seed
        return data
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(change)))
    assert summary.done == JOBS and exit_code(summary) == 0
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "out" / "images").rglob("*.json")]
    assert len(sidecars) == JOBS
    for side in sidecars:
        assert side["seed"] is None
        assert any("1208925819614629174706176" in w and "recorded as unknown" in w for w in side["warnings"])
    assert batch_status(tmp_path / "out").counts["done"] == JOBS
    check_folder(tmp_path / "out")


def test_a_task_id_of_a_megabyte_is_no_task_id(tmp_path: Path) -> None:
    def long_id(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "POST" and response.status_code == 200:
            return json_answer(request, response, lambda data: {"task_id": "t" * 1_000_000})
        return response
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, long_id), extra=QUICK_TIMEOUT)
    failed_with(tmp_path, summary, "SUBMIT_FAILED", "no usable task_id")
    assert (tmp_path / "out" / "ledger.jsonl").stat().st_size < 20_000   # no megabyte lines


class _Drip(httpx.AsyncByteStream):
    """A host that sends one byte every 5 s, forever (no read timeout ever trips)."""

    def __init__(self, seen: list[float]) -> None:
        self.seen = seen

    async def __aiter__(self):
        while True:
            self.seen.append(anyio.current_time())
            yield b"\x89"
            await anyio.sleep(5)


def test_a_slow_drip_image_host_fails_the_job_at_the_one_download_deadline(tmp_path: Path) -> None:
    seen: list[float] = []

    def drip(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.startswith("/img/"):
            return httpx.Response(200, headers={"content-type": "image/png"}, stream=_Drip(seen),
                                  request=request)
        return response
    sim = sim_with()
    clock = MockClock(autojump_threshold=0)
    _, summary = run_hostile(tmp_path, Rewriter(sim, drip), clock=clock)   # default deadline 120 s
    failed_with(tmp_path, summary, "DOWNLOAD_FAILED", "took longer than 120s")
    assert seen and max(seen) - min(seen) <= 125   # not 4 tries x 2 rounds x 120 s


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("shape", ["whole", "header-only"])
def test_an_image_of_far_more_pixels_than_asked_is_refused_before_decoding(tmp_path: Path,
                                                                           shape: str) -> None:
    # 256*256 asked for: 1024x1024 is 16x the pixels. The header-only one could not even be
    # decoded: refused from its header, it never is.
    body = _png(1024, 1024)
    if shape == "header-only":
        body = body[:64]

    def big(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.startswith("/img/"):
            return httpx.Response(200, headers={"content-type": "image/png"}, content=body,
                                  request=request)
        return response
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, big))
    failed_with(tmp_path, summary, "BAD_IMAGE", "the image is 1024x1024, more than 262,144 pixels")


def test_a_task_result_answer_over_its_cap_is_not_read(tmp_path: Path) -> None:
    # The cap is 4/3 of the image cap (a base64 image fits) plus 1 MiB: 5 MiB for a 3 MiB cap.
    def flood(data: dict) -> dict:
        return {**data, "padding": "x" * (5 * 1024 * 1024 + 512 * 1024)}
    sim = sim_with()
    _, summary = run_hostile(tmp_path, Rewriter(sim, on_poll(flood)), extra=QUICK_TIMEOUT,
                             client=ClientOptions(backoff=FAST_BACKOFF, max_image_bytes=3 << 20))
    failed_with(tmp_path, summary, "TIMEOUT", "byte limit")


# -- a batch folder is untrusted input: planted links, planted records ---------------------------

def _done_batch(tmp_path: Path) -> tuple[Path, Path, Simulator]:
    sim = sim_with()
    path, summary = run_hostile(tmp_path, sim)
    assert summary.done == JOBS
    return path, tmp_path / "out", sim


@pytest.mark.parametrize("entry", [".batchgen.lock", "ledger.jsonl", "images"])
def test_a_planted_link_in_the_batch_folder_is_refused_and_nothing_outside_changes(
        tmp_path: Path, entry: str) -> None:
    from batchgen.errors import BatchgenError

    path, out, sim = _done_batch(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / ("dir" if entry == "images" else "file")
    if entry == "images":
        target.mkdir()
        (target / "keep.txt").write_text("mine")
        for image in (out / "images").rglob("*.png"):
            image.unlink()              # the run would write them again: into the link
        shutil.rmtree(out / "images")
    else:
        target.write_text("mine\n")
        (out / entry).unlink()
    (out / entry).symlink_to(target)
    with pytest.raises(BatchgenError, match="symbolic link"):
        run_batch(path, fast_options(out, **simulated(sim)), limit=GUARD)
    if entry == "images":
        assert [p.name for p in target.iterdir()] == ["keep.txt"]
    else:
        assert target.read_text() == "mine\n"


def test_a_planted_view_link_is_refused(tmp_path: Path) -> None:
    from batchgen.errors import OutputError
    from batchgen.view.viewer import make_viewer

    _, out, _ = _done_batch(tmp_path)
    outside = tmp_path / "site"
    outside.mkdir()
    (outside / "index.html").write_text("my page")
    (out / "view").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link"):
        make_viewer(out)
    assert (outside / "index.html").read_text() == "my page" and len(list(outside.iterdir())) == 1


@pytest.mark.parametrize("how", ["symlink", "absolute", "dotdot"])
def test_a_planted_done_record_never_makes_an_outside_file_the_jobs_image(tmp_path: Path, how: str) -> None:
    path, out, sim = _done_batch(tmp_path)
    ledger = Ledger.read(out)
    job_id, rec = next((j, r) for j, r in ledger.records.items() if r.file)
    real = out / rec.file
    outside = tmp_path / "secret.png"
    outside.write_text("not an image, and not yours")
    shutil.copy(real.with_suffix(".json"), outside.with_suffix(".json"))  # a sidecar beside it too
    real.unlink()
    file = {"symlink": rec.file, "absolute": str(outside), "dotdot": "../secret.png"}[how]
    if how == "symlink":
        real.symlink_to(outside)
    planted = {"job": job_id, "state": "done", "file": file, "bytes": outside.stat().st_size,
               "sidecar_bytes": rec.side, "at": rec.at + 1}
    with (out / "ledger.jsonl").open("a") as fh:
        fh.write(json.dumps(planted) + "\n")
    again = run_batch(path, fast_options(out, **simulated(sim)), limit=GUARD)
    assert again.done == JOBS and exit_code(again) == 0
    assert real.is_file() and not real.is_symlink()       # the job's own image, fetched again
    assert outside.read_text() == "not an image, and not yours"
    assert Ledger.read(out).get(job_id).file == rec.file
    check_folder(out)


@pytest.mark.parametrize("field", [{"bytes": "abc"}, {"file": 12345}, {"spec": [1, 2]},
                                   {"task_id": ["x"]}, {"info": {"spec": "x"}, "compact": 1}],
                         ids=["bytes", "file", "spec", "task_id", "compact-info"])
def test_a_mistyped_ledger_line_is_skipped_and_counted(tmp_path: Path, field: dict) -> None:
    from batchgen.view.viewer import make_viewer

    path, out, sim = _done_batch(tmp_path)
    job_id = next(iter(Ledger.read(out).records))
    line = {"job": job_id, "state": "done", "file": "images/img-1.png", "bytes": 10, **field}
    with (out / "ledger.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")
    report = batch_status(out)
    assert report.unreadable_lines == 1 and report.counts["done"] == JOBS
    assert "1" in render_status(report)
    make_viewer(out)
    again = run_batch(path, fast_options(out, **simulated(sim)), limit=GUARD)
    assert again.done == JOBS and exit_code(again) == 0


def test_a_huge_failure_reason_in_the_ledger_costs_status_neither_memory_nor_screen(tmp_path: Path) -> None:
    import tracemalloc

    _, out, _ = _done_batch(tmp_path)
    ids = list(Ledger.read(out).records)
    with (out / "ledger.jsonl").open("a") as fh:
        # one far over the line cap, one under it but far over what is shown
        fh.write(json.dumps({"job": ids[0], "state": "failed", "code": "TASK_FAILED",
                             "reason": "\x1b[2J" + "r" * 20_000_000}) + "\n")
        fh.write(json.dumps({"job": ids[1], "state": "failed", "code": "TASK_FAILED",
                             "reason": "\x1b]0;title\x07" + "s" * 500_000}) + "\n")
    tracemalloc.start()
    try:
        report = batch_status(out)
        text = render_status(report)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.unreadable_lines == 1 and report.counts["failed"] == 1
    assert peak < 8_000_000, peak        # the 20 MB line is never held whole
    assert len(text) < 5_000 and "\x1b" not in text and "\x07" not in text
